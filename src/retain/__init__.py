"""retain: customer lifetime value and retention engine.

The public API, what a notebook user imports::

    import retain
    from retain.ingest import ingest

    store = retain.Store("retain.duckdb")
    ingest(store, "orders.csv")
    summary = retain.summarize(store, unit="W")
"""

from typing import TYPE_CHECKING, Any

from retain.errors import DataError, ModelError, RetainError, SchemaError, StoreError
from retain.features import summarize
from retain.store import Store

if TYPE_CHECKING:
    from retain.models import (
        BetaGeo,
        BetaGeoBetaBinom,
        GammaGamma,
        ModifiedBetaGeo,
        ParetoNBD,
        ShiftedBetaGeometric,
    )

# the models load SciPy's optimiser: imported on first use, not with retain
_MODELS = (
    "BetaGeo",
    "BetaGeoBetaBinom",
    "GammaGamma",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "ShiftedBetaGeometric",
)


def __getattr__(name: str) -> Any:
    if name in _MODELS:
        import retain.models

        return getattr(retain.models, name)
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
