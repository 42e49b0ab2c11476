"""Scale-out on Apache Spark: the scores of ``retain score`` for orders in Spark.

For stores that outgrow one machine: the summaries are computed in Spark SQL, the
models fitted on the driver by the code of ``retain fit`` (or a store's kept fit
used), and every customer scored in the executors by the code of ``retain score``;
the rows equal the store's ``customer_scores`` (see :mod:`retain.spark.pipeline`)::

    from retain import spark as rs

    session = rs.session("local[2]")
    result = rs.score(rs.read_orders(session, "orders.parquet"))
    rs.write(result, "scores/")

Needs the extra ``retain[spark]`` (pyspark) and Java 17 or later.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from retain.errors import ArgumentError
from retain.spark.pipeline import SparkScores, read_orders, score, session

__all__ = ["SparkScores", "read_orders", "score", "session", "write"]


def write(result: SparkScores, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write ``result``'s scores as Parquet files under the folder ``out`` (one file a
    partition of the work), with ``_fit.json`` beside them (the fit, the observation day,
    the RFM boundaries). The folder appears whole or not at all: the files are written
    to a folder beside it, which then takes its place. An existing, non-empty ``out`` is
    refused unless ``overwrite``. Returns what ``_fit.json`` holds."""
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise ArgumentError(f"{target} is a file; give a folder for the scores")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ArgumentError(f"{target} is not empty: give another folder or --overwrite")
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        result.scores.write.mode("error").parquet(str(staging))
        info = {
            "as_of": result.as_of.isoformat(),
            "customers": result.customers,
            "totals": _totals(result.scores.sparkSession, staging),
            "fit": result.fit,
            "boundaries": None if result.boundaries is None else vars(result.boundaries),
            "warnings": result.warnings,
            "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (staging / "_fit.json").write_text(json.dumps(info, indent=2, default=_plain) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        for frame in result.cached:  # written (or failed): the cache is no longer wanted
            frame.unpersist()
    return info


def _totals(spark: Any, written: Path) -> dict[str, Any]:
    """The figures ``retain score`` reports, of the scores written: mean P(alive), expected
    purchases in the next 365 days, 12-month CLV, customers with a next purchase date."""
    row = (
        spark.read.parquet(str(written))
        .selectExpr(
            "avg(p_alive) AS mean_p_alive",
            "sum(expected_purchases_365d) AS expected_purchases_365d",
            "sum(clv_12m) AS clv_12m",
            "count(next_purchase_date) AS with_next_purchase_date",
        )
        .collect()[0]
    )
    return row.asDict()


def _plain(value: Any) -> Any:
    """JSON for what ``json`` does not know: NumPy numbers, tuples, dates."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
