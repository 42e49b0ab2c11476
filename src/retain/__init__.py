"""retain: customer lifetime value and retention engine.

The public API, what a notebook user imports::

    import retain
    from retain.ingest import ingest

    store = retain.Store("retain.duckdb")
    ingest(store, "orders.csv")
    summary = retain.summarize(store, unit="W")
"""

from retain.errors import DataError, ModelError, RetainError, SchemaError, StoreError
from retain.features import summarize
from retain.store import Store

__all__ = [
    "DataError",
    "ModelError",
    "RetainError",
    "SchemaError",
    "Store",
    "StoreError",
    "__version__",
    "summarize",
]

__version__ = "0.1.0"
