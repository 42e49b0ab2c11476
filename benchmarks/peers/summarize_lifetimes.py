"""lifetimes 0.11.3's summary of the same orders, run in the peer venv.

benchmarks/.venv-peers/bin/python benchmarks/peers/summarize_lifetimes.py ORDERS.parquet END
"""

import json
import sys
import time

import pandas as pd
from lifetimes.utils import summary_data_from_transaction_data

orders = pd.read_parquet(sys.argv[1], columns=["customer_id", "ordered_at", "net_revenue"])
start = time.perf_counter()
summary = summary_data_from_transaction_data(
    orders,
    "customer_id",
    "ordered_at",
    monetary_value_col="net_revenue",
    freq="D",
    observation_period_end=sys.argv[2],
)
seconds = time.perf_counter() - start
print(
    json.dumps(
        {
            "seconds": seconds,
            "customers": len(summary),
            "frequency": float(summary["frequency"].sum()),
        }
    )
)
