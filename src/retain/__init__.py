"""retain: customer lifetime value and retention engine.

The public API, what a notebook user imports::

    import retain
    from retain.ingest import ingest

    store = retain.Store("retain.duckdb")
    ingest(store, "orders.csv")
    summary = retain.summarize(store, unit="W")
"""

import importlib
from typing import TYPE_CHECKING, Any

from retain.errors import DataError, ModelError, RetainError, SchemaError, StoreError

if TYPE_CHECKING:
    from retain.features import summarize
    from retain.models import (
        BetaGeo,
        BetaGeoBetaBinom,
        GammaGamma,
        ModifiedBetaGeo,
        ParetoNBD,
        ShiftedBetaGeometric,
    )
    from retain.store import Store

# the store and the summaries load DuckDB and pandas, the models SciPy: each is imported
# on first use, not with retain (every command of the CLI imports the package first)
_LAZY = {
    "Store": "retain.store",
    "summarize": "retain.features",
    **dict.fromkeys(
        (
            "BetaGeo",
            "BetaGeoBetaBinom",
            "GammaGamma",
            "ModifiedBetaGeo",
            "ParetoNBD",
            "ShiftedBetaGeometric",
        ),
        "retain.models",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'retain' has no attribute {name!r}")


__all__ = [
    "BetaGeo",
    "BetaGeoBetaBinom",
    "DataError",
    "GammaGamma",
    "ModelError",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "RetainError",
    "SchemaError",
    "ShiftedBetaGeometric",
    "Store",
    "StoreError",
    "__version__",
    "summarize",
]

__version__ = "0.1.0"
