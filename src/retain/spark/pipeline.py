"""The pipeline of ``retain fit`` and ``retain score`` on Spark DataFrames.

1. The per-customer summary (frequency, recency, T, monetary) and the RFM measures are
   computed in Spark SQL (:mod:`retain.spark.sql`), with the definitions of
   :func:`retain.features.summarize` and :mod:`retain.segments.rfm`.
2. The fit (unless a store's kept fit is given) runs on the driver with the code of
   ``retain fit`` (:func:`retain.scoring.choose_fit`: the holdout comparison, the spend
   model, the fit guard). The driver receives the summaries collapsed to their distinct
   rows with a count and the first customer id of each (no per-customer rows with
   ids); it lays them out again as the customers' numbers, groups in the order of their
   first customer, which is the order the store's path sees them in. At most the
   summaries' numbers of every customer (no ids), ~100 bytes a customer, are held there.
3. The RFM boundaries are measured on the driver from how many customers have each
   recency, frequency and monetary value (:func:`retain.segments.rfm.boundaries_from_counts`),
   the population gap from how many have each typical gap.
4. Every customer is scored in the executors (``mapInArrow``) by the code of
   ``retain score`` (:func:`retain.scoring.score_summary`, then
   :func:`retain.segments.assign.measured_segments` against those boundaries).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from retain.errors import ArgumentError, DataError, ModelError, SchemaError
from retain.spark import sql as q

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from retain.segments.rfm import RfmBoundaries
    from retain.store import Store
    from retain.validate import HoldoutData

_PANDAS_WARNING = "PySpark does not yet fully support pandas"

#: the segment columns' types, as ``retain score`` writes them
SEGMENT_TYPES = {
    "segment": pa.string(),
    "r_score": pa.int64(),
    "f_score": pa.int32(),
    "m_score": pa.int32(),
    "rfm": pa.string(),
    "churn_risk": pa.string(),
    "churn_reason": pa.string(),
    "value_at_stake": pa.float64(),
}
_SUMMARY_COLUMNS = ("frequency", "recency", "T", "monetary")
_MEASURE_COLUMNS = (
    "orders",
    "net_revenue",
    "first_order_at",
    "last_order_at",
    "order_days",
    "days_since_last_order",
    "typical_gap_days",
)


def session(master: str = "local[2]", *, app_name: str = "retain", **conf: str) -> SparkSession:
    """A Spark session for retain: the session's time zone UTC (a day is a UTC day, as in
    the store), Arrow between the JVM and Python, and, in local mode, the Python workers
    run by this interpreter. ``conf``: more settings (``spark.driver.memory="4g"``...).
    An active session is reused as it is."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise ArgumentError(
            "the Spark path needs pyspark: pip install 'retain[spark]' (and Java 17 or later)"
        ) from exc
    # pyspark warns of pandas 3 on every conversion, here and in every Python worker;
    # what retain converts (numbers, text, dates) it converts right
    warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)
    quiet = f"ignore:{_PANDAS_WARNING}:FutureWarning"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(
            w for w in (os.environ.get("PYTHONWARNINGS"), quiet) if w
        )
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    log = Path(__file__).with_name("log4j2.properties")
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log}")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8" if master.startswith("local") else "200")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def read_orders(spark: SparkSession, path: str) -> DataFrame:
    """The orders in Parquet at ``path`` (a file or a folder of files), or the table
    ``path`` names when it is no path on disk; a clear error when neither reads."""
    from pyspark.errors import AnalysisException

    try:
        if os.path.exists(path) or "://" in path:
            return spark.read.parquet(path)
        return spark.table(path)
    except AnalysisException as exc:
        text = str(exc)
        if "NANOS" in text:
            raise DataError(
                f"{path}: timestamps in nanoseconds, which Spark does not read; write them in "
                "microseconds (pandas: df.to_parquet(..., coerce_timestamps='us'))"
            ) from exc
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise DataError(f"{path}: cannot be read as Parquet or a table: {first_line}") from exc


@dataclass
class SparkScores:
    """What :func:`score` computed: ``scores`` (a Spark DataFrame with the columns of
    ``customer_scores``, computed when written or collected), the observation day, the
    fit used (``fit``: ``fit_id`` (None when fitted here), ``model``, ``params``,
    ``spend_params``, the CLV's ``margin`` and ``discount_rate``, and when fitted here ``choice``, ``candidates``, ``guard``,
    ``data_range``, ``warnings``) and the RFM boundaries the segments were scored against."""

    scores: DataFrame
    as_of: dt.date
    customers: int
    fit: dict[str, Any]
    boundaries: RfmBoundaries | None
    warnings: list[str] = field(default_factory=list)
    #: what Spark keeps cached for ``scores`` (released by :func:`retain.spark.write`)
    cached: list[DataFrame] = field(default_factory=list)


def score(
    orders: DataFrame,
    *,
    as_of: str | dt.date | None = None,
    store: Store | None = None,
    model: str = "auto",
    unit: str = "D",
    grain: str = "D",
    holdout_weeks: int | None = None,
    penalizer: float = 0.0,
    margin: float | None = None,
    discount_rate: float | None = None,
    interval: float = 0.9,
    segments: bool = True,
    customer_id: str = "customer_id",
    timestamp: str = "ordered_at",
    amount: str = "net_revenue",
) -> SparkScores:
    """Score every customer of ``orders`` (a Spark DataFrame, one row per order) as
    ``retain score`` would: the same columns, the same values.

    With ``store``, its latest kept fit, its CLV settings (margin, discount rate) and its
    ``as_of`` setting (when set; the default observation day) are used and nothing is
    fitted; else the models are fitted as ``retain fit`` fits them
    (``model``, ``unit``, ``grain``, ``holdout_weeks``, ``penalizer`` as there) on the
    orders to ``as_of`` (default: the day of the last order). ``margin`` and
    ``discount_rate`` default to the store's settings (without a store: 1 and 0.1).
    ``segments``: add the segment columns (RFM, segment, churn risk and reason, value at
    stake); churn reasons cite no complaints (the feedback is not read).
    """
    from retain import config
    from retain.scoring import ScoreBasis, check_fit_arguments, load_fit

    check_fit_arguments(model, unit, grain, holdout_weeks)
    spark = orders.sparkSession
    view = _orders_view(orders, customer_id, timestamp, amount)
    try:
        first, last = _first_last(spark, view, amount)
        if as_of is None and store is not None and config.load_settings(store).as_of is not None:
            # the store's own observation day (its as_of setting), as its commands use
            as_of = config.observation_day(store)
        end = last if as_of is None else config.parse_as_of(as_of).date()
        config.check_not_before_first_order(end, first)
        if store is not None:
            fitted, spend, row = load_fit(store)
            row = {"fit_id": int(row["fit_id"]), "model": str(row["model"]),
                   "unit": str(row["unit"]), "grain": str(row["grain"])}  # fmt: skip
            fit: dict[str, Any] = {
                **row,
                "params": fitted.params_,
                "spend_params": None if spend is None else spend.params_,
            }
            margin = config.resolve_margin(store, margin)
            discount_rate = config.resolve_discount_rate(store, discount_rate)
        else:
            fitted, spend, fit = _fit(
                spark, view, end, first, model, unit, grain, holdout_weeks, penalizer
            )
            row = {"fit_id": None, "model": fit["model"], "unit": unit, "grain": grain}
            margin = config.check_margin(1.0 if margin is None else margin)
            discount_rate = config.check_discount_rate(
                0.1 if discount_rate is None else discount_rate
            )
        fit.update(margin=margin, discount_rate=discount_rate)
        basis = ScoreBasis(
            fit_id=-1 if row["fit_id"] is None else int(row["fit_id"]),
            as_of=end.isoformat(),
            discount_rate=discount_rate,
            margin=margin,
            interval=interval,
            segments=segments and spend is not None,
            boundaries=None,
        )
        warned: list[str] = []
        if segments and spend is None:
            warned.append("no spend model: segment columns left out (they need a CLV)")
        literals = q.literals(end, row["unit"], row["grain"])
        summary = spark.sql(q.SUMMARY.format(src=view, **literals))
        per_customer = summary
        boundaries = None
        measures = None
        if basis.segments:
            measures = spark.sql(q.RFM_MEASURES.format(src=view, **q.literals(end, "D", "D")))
            measures = measures.persist()
            boundaries = _boundaries(measures, end)
            per_customer = summary.join(measures, "customer_id")
        customers = boundaries.customers if boundaries is not None else summary.count()
        scorer = _Scorer(
            fitted.to_json(),
            None if spend is None else spend.to_json(),
            row,
            end,
            basis,
            boundaries,
        )
        scores = per_customer.mapInArrow(scorer, _spark_schema(basis.segments))
    finally:
        spark.catalog.dropTempView(view)
    # the view is dropped; the plan keeps what it read
    return SparkScores(
        scores, end, int(customers), fit, boundaries, warned, [] if measures is None else [measures]
    )


def _orders_view(orders: DataFrame, customer_id: str, timestamp: str, amount: str) -> str:
    """``orders`` as a temporary view of ``customer_id``, ``ts``, ``amount``; its name."""
    import uuid

    missing = [c for c in (customer_id, timestamp, amount) if c not in orders.columns]
    if missing:
        raise SchemaError(
            f"the orders lack the column(s) {missing}; found {orders.columns}. Name the "
            "columns with --customer-id, --timestamp and --amount (customer_id=, timestamp=, "
            "amount=)"
        )
    types = dict(orders.dtypes)
    if not (types[timestamp].startswith("timestamp") or types[timestamp] == "date"):
        raise SchemaError(
            f"the orders' column {timestamp!r} is of type {types[timestamp]}; expected a "
            "timestamp or date"
        )
    numbers = ("double", "float", "int", "bigint", "smallint", "tinyint", "decimal")
    if not types[amount].startswith(numbers):
        raise SchemaError(
            f"the orders' column {amount!r} is of type {types[amount]}; expected a number"
        )
    name = "retain_orders_" + uuid.uuid4().hex[:12]
    orders.selectExpr(
        f"`{customer_id}` AS customer_id", f"`{timestamp}` AS ts", f"`{amount}` AS amount"
    ).createOrReplaceTempView(name)
    return name


def _first_last(spark: SparkSession, view: str, column: str) -> tuple[dt.date, dt.date]:
    found = spark.sql(
        "SELECT CAST(min(CAST(ts AS TIMESTAMP)) AS DATE) AS first, "
        "CAST(max(CAST(ts AS TIMESTAMP)) AS DATE) AS last, "
        "count(*) FILTER (WHERE NOT isnan(CAST(amount AS DOUBLE)) AND "
        "abs(CAST(amount AS DOUBLE)) != double('inf')) AS finite, count(amount) AS amounts "
        f"FROM {view} WHERE customer_id IS NOT NULL AND ts IS NOT NULL"
    ).collect()[0]
    if found["last"] is None:
        raise DataError("there are no orders to score (none with a customer and a time)")
    if found["finite"] != found["amounts"]:
        bad = spark.sql(
            f"SELECT customer_id, ts, CAST(amount AS STRING) AS amount FROM {view} "
            "WHERE isnan(CAST(amount AS DOUBLE)) OR abs(CAST(amount AS DOUBLE)) = double('inf') "
            "LIMIT 1"
        ).collect()[0]
        raise DataError(
            f"the orders' column {column!r} holds an amount that is not finite ({bad['amount']}, customer "
            f"{bad['customer_id']!r} at {bad['ts']}); expected a finite number: drop or fix "
            "such rows (retain ingest quarantines them)"
        )
    return found["first"], found["last"]


def _boundaries(measures: DataFrame, end: dt.date) -> RfmBoundaries:
    """The RFM boundaries of every customer measured, from counts of their values."""
    from retain.segments.rfm import boundaries_from_counts

    def counts(column: str) -> pd.DataFrame:
        return measures.groupBy(column).count().withColumnRenamed("count", "n").toPandas()

    gaps = counts("typical_gap_days").dropna()
    population_gap = _median(gaps["typical_gap_days"].to_numpy(), gaps["n"].to_numpy())
    return boundaries_from_counts(
        counts("days_since_last_order"),
        counts("orders"),
        counts("net_revenue"),
        scheme="quintiles",
        as_of=end.isoformat(),
        population_gap_days=population_gap,
    )


def _median(values: np.ndarray, counts: np.ndarray) -> float | None:
    """DuckDB's median of the values each repeated its count of times (the population
    gap of :mod:`retain.segments.risk`), None for none."""
    import duckdb

    if not len(values):
        return None
    spread = np.repeat(values.astype(np.float64), counts.astype(np.int64))
    con = duckdb.connect()
    try:
        con.register("gaps", pa.table({"v": spread}))
        found = con.execute("SELECT median(v) FROM gaps").fetchall()[0][0]
    finally:
        con.close()
    return None if found is None else float(found)


@dataclass
class _Scorer:
    """The executors' work: each Arrow batch of customers (summary and RFM measures) to
    their rows of ``customer_scores``. Carries the fit as JSON (pickled to the workers)."""

    model_json: str
    spend_json: str | None
    row: dict[str, Any]
    end: dt.date
    basis: Any
    boundaries: RfmBoundaries | None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import warnings

        from retain.models import GammaGamma, Model, TransactionModel
        from retain.scoring import score_summary

        model = Model.from_json(self.model_json)
        spend = None if self.spend_json is None else Model.from_json(self.spend_json)
        assert isinstance(model, TransactionModel)
        assert spend is None or isinstance(spend, GammaGamma)
        schema = _arrow_schema(self.boundaries is not None)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("customer_id").cast(pa.string())
            summary = pd.DataFrame(
                {c: batch.column(c).to_numpy(zero_copy_only=False) for c in _SUMMARY_COLUMNS},
                index=pd.Index(ids.to_numpy(zero_copy_only=False), name="customer_id"),
            )
            summary["frequency"] = summary["frequency"].astype("int64")
            summary.attrs.update(
                {
                    "unit": self.row["unit"],
                    "grain": self.row["grain"],
                    "observation_end": self.end.isoformat(),
                }
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the driver reports what the fit warned
                columns = score_summary(model, spend, summary, self.row, self.end, self.basis)
            n = batch.num_rows
            arrays: dict[str, Any] = {"customer_id": ids}
            for name, values in columns.items():
                arrays[name] = pa.array(values, from_pandas=True)
            arrays["model"] = pa.array([self.row["model"]] * n, pa.string())
            arrays["fit_id"] = pa.array([self.row["fit_id"]] * n, pa.int64())
            arrays["as_of"] = pa.array([self.end] * n, pa.date32())
            if self.boundaries is not None:
                arrays.update(self._segments(batch, ids, columns))
            yield pa.RecordBatch.from_pydict(arrays).cast(schema)

    def _segments(
        self, batch: pa.RecordBatch, ids: pa.Array, columns: dict[str, np.ndarray]
    ) -> dict[str, pa.Array]:
        from retain.segments.assign import SEGMENT_SCORE_COLUMNS, measured_segments

        assert self.boundaries is not None
        measured = pa.table({"customer_id": ids, **{c: batch.column(c) for c in _MEASURE_COLUMNS}})
        model = pa.table(
            {
                "customer_id": ids,
                "p_alive": pa.array(columns["p_alive"], from_pandas=True),
                "clv_if_retained": pa.array(columns["clv_if_retained"], from_pandas=True),
                "_row": pa.array(np.arange(len(ids), dtype=np.int64)),
            }
        )
        found = measured_segments(measured, model, self.boundaries)
        # back in the batch's order: every customer has a row (measured and model alike)
        place = pa.table({"customer_id": ids, "_row": model.column("_row")})
        found = place.join(found, "customer_id").sort_by("_row")
        if found.num_rows != len(ids):  # pragma: no cover - the join is one to one
            raise DataError("the segments lost customers of a batch")
        return {c: found.column(c).combine_chunks() for c in SEGMENT_SCORE_COLUMNS}


def _arrow_schema(with_segments: bool) -> pa.Schema:
    """The Arrow types of the rows written: ``customer_scores``' columns, in its order."""
    from retain.scoring import SCORE_COLUMNS

    special = {
        "customer_id": pa.string(),
        "model": pa.string(),
        "fit_id": pa.int64(),
        "as_of": pa.date32(),
        **dict.fromkeys(
            ("next_purchase_date", "next_purchase_window_start", "next_purchase_window_end"),
            pa.date32(),
        ),
    }
    fields = [pa.field(c, special.get(c, pa.float64())) for c in SCORE_COLUMNS]
    if with_segments:
        fields += [pa.field(c, t) for c, t in SEGMENT_TYPES.items()]
    return pa.schema(fields)


def _spark_schema(with_segments: bool) -> str:
    """:func:`_arrow_schema` in Spark's DDL."""
    names = {
        pa.string(): "STRING",
        pa.float64(): "DOUBLE",
        pa.int64(): "BIGINT",
        pa.int32(): "INT",
        pa.date32(): "DATE",
    }
    return ", ".join(f"{f.name} {names[f.type]}" for f in _arrow_schema(with_segments))


def _fit(
    spark: SparkSession,
    view: str,
    end: dt.date,
    first: dt.date,
    model: str,
    unit: str,
    grain: str,
    holdout_weeks: int | None,
    penalizer: float,
) -> tuple[Any, Any, dict[str, Any]]:
    """``retain fit`` on the orders of ``view`` to ``end``: the model, the spend model and
    what the fit's record holds."""
    from retain.guard import history, recent_start
    from retain.scoring import choose_fit, holdout_split, refusal

    weeks, calibration_end = holdout_split(end, first, model, holdout_weeks)
    held: HoldoutData | None = None
    literals = q.literals(end, unit, grain)
    if calibration_end is not None:
        held = _holdout_data(spark, view, end, calibration_end, unit, grain)
        summary = held.full
    else:
        frame = spark.sql(q.SUMMARY.format(src=view, **literals))
        summary = _laid_out(frame, list(_SUMMARY_COLUMNS))
        summary.attrs.update({"unit": unit, "grain": grain, "observation_end": end.isoformat()})
    history_row = spark.sql(
        q.HISTORY.format(
            src=view,
            cutoff=literals["cutoff"],
            recent_start=f"TIMESTAMP '{recent_start(end).isoformat()} 00:00:00'",
        )
    ).collect()[0]
    figures = history(float(history_row["revenue_12m"]), history_row["first_any_day"], end)
    picked = choose_fit(
        summary,
        held,
        lambda: figures,
        model=model,
        penalizer=penalizer,
        grain=grain,
        end=end,
    )
    kept = bool(picked.guard[-1]["kept"])
    fit = {
        "fit_id": None,
        "model": picked.model,
        "unit": unit,
        "grain": grain,
        "observation_end": end.isoformat(),
        "params": picked.fitted.params_,
        "spend_params": None if picked.spend is None else picked.spend.params_,
        "holdout_weeks": weeks if picked.candidates is not None else None,
        "candidates": None
        if picked.candidates is None
        else picked.candidates.to_dict(orient="records"),
        "choice": picked.choice,
        "guard": picked.guard,
        "kept": kept,
        "warnings": picked.warnings,
        "data_range": {
            "first_order_day": None
            if history_row["first_day"] is None
            else history_row["first_day"].isoformat(),
            "last_order_day": None
            if history_row["last_day"] is None
            else history_row["last_day"].isoformat(),
            "observation_end": end.isoformat(),
            "customers": len(summary),
            "orders": int(history_row["orders"]),
            "repeat_buyers": int((summary["frequency"] > 0).sum()),
        },
    }
    if not kept:
        raise ModelError(refusal(picked.guard, forced=model != "auto"))
    return picked.fitted, picked.spend, fit


def _laid_out(frame: DataFrame, columns: list[str]) -> pd.DataFrame:
    """The per-customer rows of ``frame`` as the driver holds them: collapsed in Spark to
    their distinct values of ``columns`` with a count and the first customer id, then
    repeated their count of times, the groups in the order of their first customer (so
    the first row of each distinct value is where a by-customer order has it), indexed by
    that first customer id."""
    from pyspark.sql import functions as F

    grouped = (
        frame.groupBy(*columns)
        .agg(F.min("customer_id").alias("first_id"), F.count("*").alias("n"))
        .toPandas()
    )
    # Spark and DuckDB compare text by its UTF-8 bytes, as Python compares code points
    grouped = grouped.sort_values("first_id", kind="stable").reset_index(drop=True)
    counts = grouped["n"].to_numpy(dtype=np.int64)
    laid = pd.DataFrame(
        {c: np.repeat(grouped[c].to_numpy(), counts) for c in columns},
        index=pd.Index(np.repeat(grouped["first_id"].to_numpy(), counts), name="customer_id"),
    )
    return laid


def _holdout_data(
    spark: SparkSession,
    view: str,
    end: dt.date,
    calibration_end: dt.date,
    unit: str,
    grain: str,
) -> HoldoutData:
    """:func:`retain.validate.holdout_data` of the orders of ``view`` (with net revenue):
    the calibration summary, what its customers did in the holdout and the summary of
    every customer to ``end``."""
    from retain.validate import HoldoutData

    literals = q.literals(end, unit, grain, calibration_end)
    split = spark.sql(q.SPLIT_SUMMARY.format(src=view, **literals)).persist()
    try:
        full = _laid_out(split, list(_SUMMARY_COLUMNS))
        calibration = _laid_out(
            split.where("calibration_frequency >= 0"),
            [
                "calibration_frequency",
                "calibration_recency",
                "calibration_T",
                "holdout_purchases",
                "first_holdout_day",
            ],
        )
    finally:
        split.unpersist()
    if calibration.empty:
        raise DataError(f"no orders on or before the calibration end {calibration_end}")
    days = spark.sql(q.HOLDOUT_DAYS.format(src=view, **literals)).toPandas()
    full["frequency"] = full["frequency"].astype("int64")
    full.attrs.update({"unit": unit, "grain": grain, "observation_end": end.isoformat()})
    summary = pd.DataFrame(
        {
            "frequency": calibration["calibration_frequency"].astype("int64"),
            "recency": calibration["calibration_recency"].astype("float64"),
            "T": calibration["calibration_T"].astype("float64"),
        },
        index=calibration.index,
    )
    summary.attrs.update(
        {"unit": unit, "grain": grain, "observation_end": calibration_end.isoformat()}
    )
    return HoldoutData(
        pd.Timestamp(calibration_end),
        pd.Timestamp(end),
        unit,
        grain,
        summary,
        pd.Series(calibration["holdout_purchases"].to_numpy(dtype=np.float64), index=summary.index),
        pd.Series(calibration["first_holdout_day"].to_numpy(dtype=np.float64), index=summary.index),
        np.repeat(days["day"].to_numpy(dtype=np.int64), days["purchases"].to_numpy(dtype=np.int64)),
        full,
    )
