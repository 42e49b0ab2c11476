"""lifetimes 0.11.3 fitting and scoring the same summary as retain, in the peer venv.

    benchmarks/.venv-peers/bin/python benchmarks/peers/models_lifetimes.py SUMMARY.parquet [--pareto]

The summary has frequency, recency, T (days) and monetary. Prints one JSON line of
timings (seconds), parameters and the process's peak memory.
"""

import json
import sys
import time
import warnings

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter

warnings.simplefilter("ignore")
summary = pd.read_parquet(sys.argv[1])
x, t_x, T, m = (summary[c] for c in ("frequency", "recency", "T", "monetary"))
out = {}

start = time.perf_counter()
bgf = BetaGeoFitter().fit(x, t_x, T)
out["bgnbd_fit_s"] = time.perf_counter() - start
out["bgnbd_params"] = {k: float(v) for k, v in bgf.params_.items()}

repeat = summary[(summary["frequency"] > 0) & (summary["monetary"] > 0)]
start = time.perf_counter()
ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary"])
out["gamma_gamma_fit_s"] = time.perf_counter() - start
out["gamma_gamma_params"] = {k: float(v) for k, v in ggf.params_.items()}

start = time.perf_counter()
p_alive = bgf.conditional_probability_alive(x, t_x, T)
expected = [
    bgf.conditional_expected_number_of_purchases_up_to_time(days, x, t_x, T)
    for days in (30, 90, 365)
]
out["p_alive_and_expected_s"] = time.perf_counter() - start

start = time.perf_counter()
clv = ggf.customer_lifetime_value(bgf, x, t_x, T, m, time=12, discount_rate=0.01, freq="D")
out["clv_s"] = time.perf_counter() - start
out["clv_total"] = float(clv.sum())
out["p_alive_mean"] = float(p_alive.mean())
out["expected_365d_total"] = float(expected[2].sum())

if "--pareto" in sys.argv:
    start = time.perf_counter()
    pnbd = ParetoNBDFitter().fit(x, t_x, T)
    out["pnbd_fit_s"] = time.perf_counter() - start
    out["pnbd_params"] = {k: float(v) for k, v in pnbd.params_.items()}

# the high-water mark of this process's own memory (ru_maxrss would include the
# parent's, inherited through fork)
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            out["peak_mb"] = int(line.split()[1]) / 1024
print(json.dumps(out))
