"""Every customer's segment, RFM scores and churn risk, in one pass over the orders.

:func:`customer_segments` is the workhorse: RFM scores (see
:mod:`retain.segments.rfm`), the segment the rule table gives those scores
(:mod:`retain.segments.rules`), the model's P(alive) and CLV where the store
has them, and churn risk with its reason (:mod:`retain.segments.risk`).
:func:`segment_scores` is what ``retain score`` writes to ``customer_scores``;
:func:`segment_summary` is the one-row-per-segment report.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from retain.config import observation_day
from retain.errors import ArgumentError, SchemaError
from retain.segments.rfm import (
    RFM_COLUMNS,
    RFM_MEASURES_SQL,
    RFM_SQL,
    AsOf,
    RfmBoundaries,
    measure_boundaries,
    orders_view,
    rescore_with_boundaries,
)
from retain.segments.risk import (
    COMPLAINTS_SQL,
    NO_COMPLAINTS_SQL,
    RiskThresholds,
    run_risk_arrow,
    run_risk_sql,
)
from retain.segments.rules import TOP_PRODUCTS, SegmentRules, load_rules, score_levels
from retain.store import Store

Rules = SegmentRules | str | Path | None

SEGMENT_SCORE_COLUMNS = [
    "segment",
    "r_score",
    "f_score",
    "m_score",
    "rfm",
    "churn_risk",
    "churn_reason",
    "value_at_stake",
]
"""Columns :func:`segment_scores` returns, for the ``customer_scores`` table."""

CUSTOMER_COLUMNS = [
    *RFM_COLUMNS,
    "rfm",
    "segment",
    "action",
    "offer",
    "p_alive",
    "clv_if_retained",
    "churn_risk",
    "churn_reason",
    "value_at_stake",
    "overdue_ratio",
]

# Per customer inputs of the risk query, over the temp table seg_rfm (scores ranked
# among customers) and the model's scores.
RISK_INPUT_SQL = """
CREATE OR REPLACE TEMP VIEW risk_input AS
SELECT c.*, m.p_alive, m.clv_if_retained, k.open_complaint
FROM seg_rfm AS c
LEFT JOIN seg_model AS m USING (customer_id)
LEFT JOIN seg_complaints AS k USING (customer_id)
"""

# Over the risk query: the recency score capped by the churn risk (seg_caps, from the
# rule table's [recency] section), then the segment the rules give the capped scores.
SEGMENT_SQL = """
SELECT
    x.*,
    x.r_score || x.f_score || x.m_score  AS rfm,
    g.segment,
    g.position                           AS segment_position
FROM (
    SELECT
        r.* REPLACE (least(r.r_score, coalesce(k.cap, r.r_score)) AS r_score),
        r.r_score                        AS r_rank_score
    FROM ({risk}) AS r
    LEFT JOIN seg_caps AS k ON k.risk = r.risk
) AS x
JOIN seg_grid AS g USING (r_score, f_score, m_score)
"""


def run_segmented_sql(
    con: duckdb.DuckDBPyConnection,
    outer_sql: str,
    info: dict[str, Any],
    *,
    thresholds: RiskThresholds | None,
    extra_params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run ``outer_sql`` inside :func:`segmented`, ``{risk}`` being each customer's risk,
    capped recency score, ``rfm`` and segment."""
    return run_risk_sql(
        con,
        outer_sql,
        thresholds=thresholds,
        population_gap_days=info["population_gap_days"],
        extra_params=extra_params,
        wrap=SEGMENT_SQL,
    )


def resolve_rules(rules: Rules) -> SegmentRules:
    """A rule table from a :class:`SegmentRules`, a TOML file path, or ``None`` (the default,
    read once: the shipped file does not change while the process runs)."""
    if isinstance(rules, SegmentRules):
        return rules
    if rules is None:
        return _default_rules()
    return load_rules(rules)


@functools.cache
def _default_rules() -> SegmentRules:
    return load_rules(None)


def customer_segments(
    data: Any,
    *,
    as_of: AsOf = None,
    scheme: str = "quintiles",
    rules: Rules = None,
    scores: pd.DataFrame | None = None,
    thresholds: RiskThresholds | None = None,
    customers: Sequence[str] | None = None,
    boundaries: RfmBoundaries | None = None,
) -> pd.DataFrame:
    """One row per customer with RFM scores, segment, action and churn risk.

    ``data`` is a :class:`~retain.store.Store` or a frame of orders
    (``customer_id``, ``ordered_at``, ``net_revenue``). ``as_of`` is the
    observation date (default: the day of the last order); ``scheme`` is
    "quintiles" or "quartiles"; ``rules`` a rule file or :class:`SegmentRules`.

    Model inputs, in order of preference: ``scores`` (a frame indexed by
    customer_id with ``p_alive`` and ``clv_if_retained`` or ``clv_12m``, the
    12-month CLV in the reporting currency), else the store's
    ``customer_scores`` table, else none: risk then rests on how overdue each
    customer is, and value at stake is missing. CLV if retained is taken as
    ``clv_12m / p_alive`` (the model's CLV is the value if alive weighted by
    P(alive)).

    The recency score is the customer's rank among customers, capped by their
    churn risk (the rule table's ``[recency]`` caps): ``r_score`` is the capped
    score, which the segment follows.

    Indexed by ``customer_id``; columns :data:`CUSTOMER_COLUMNS` (money in the
    reporting currency, times in days). ``attrs`` hold ``as_of``, ``scheme``,
    ``rules`` (its source) and ``model`` ("scores", "customer_scores" or "none").

    ``customers`` gives only those customers, scored against the ``boundaries``
    of an earlier full scoring (required then: a handful of customers cannot be
    ranked among themselves), with its scheme and its population gap.
    """
    return _per_customer(
        data,
        CUSTOMER_COLUMNS,
        as_of=as_of,
        scheme=scheme,
        rules=rules,
        scores=scores,
        thresholds=thresholds,
        customers=customers,
        boundaries=boundaries,
    )


def segment_scores(
    store: Any,
    *,
    as_of: AsOf = None,
    scheme: str = "quintiles",
    rules: Rules = None,
    scores: pd.DataFrame | None = None,
    thresholds: RiskThresholds | None = None,
    customers: Sequence[str] | None = None,
    boundaries: RfmBoundaries | None = None,
) -> pd.DataFrame:
    """Segment, RFM scores, churn risk, reason and value at stake per customer.

    The columns ``retain score`` writes to ``customer_scores`` next to the
    model's: :data:`SEGMENT_SCORE_COLUMNS`, indexed by ``customer_id``. Pass
    the model's fresh ``scores`` (indexed by customer_id, with ``p_alive`` and
    ``clv_12m``) when they are not in the store yet. Arguments as in
    :func:`customer_segments`.

    Scored among every customer, the result's ``attrs["boundaries"]`` keeps
    where each score began (:class:`~retain.segments.rfm.RfmBoundaries`).
    """
    return _per_customer(
        store,
        SEGMENT_SCORE_COLUMNS,
        as_of=as_of,
        scheme=scheme,
        rules=rules,
        scores=scores,
        thresholds=thresholds,
        customers=customers,
        boundaries=boundaries,
        measure=boundaries is None,
    )


def segment_score_table(
    store: Store, *, as_of: AsOf, scores: Callable[[Callable[[], None]], pa.Table]
) -> tuple[pa.Table, RfmBoundaries | None]:
    """:func:`segment_scores` of every customer of ``store`` with the default rules and
    thresholds, for ``retain score``: an Arrow table (``customer_id`` then
    :data:`SEGMENT_SCORE_COLUMNS`, by customer_id) and the RFM boundaries measured.

    ``scores(start)`` computes the model's scores (``customer_id``, ``p_alive``,
    ``clv_if_retained``, nulls where unknown, by customer_id; ``_row``: their
    positions 0, 1, ...) in this thread, and calls ``start()`` once
    its own queries are done: the customers' RFM measures are then taken from the orders,
    on a connection of their own in another thread, while it computes (DuckDB works
    outside Python's lock, the models mostly in NumPy). Its errors are raised as they are."""
    table = resolve_rules(None)
    renamed = {"churn_risk": "r.risk", "churn_reason": "r.reason"}
    select = ", ".join(f"{renamed.get(c, 'r.' + c)} AS {c}" for c in SEGMENT_SCORE_COLUMNS)
    scheme = "quintiles"
    worker = copy.copy(store)
    worker.con = store.con.cursor()
    try:
        zone = store.con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
        worker.con.execute("SET TimeZone = '" + str(zone).replace("'", "''") + "'")
        failed: list[BaseException] = []

        def measure() -> None:
            try:
                with orders_view(worker, as_of) as (con, params):
                    con.execute(
                        f"CREATE OR REPLACE TEMP TABLE seg_rfm AS {RFM_SQL}",
                        {**params, "levels": score_levels(scheme)},
                    )
            except BaseException as exc:  # raised in the caller's thread below
                failed.append(exc)

        thread = threading.Thread(target=measure, name="retain-rfm", daemon=True)

        def start() -> None:
            if thread.ident is None:
                thread.start()

        try:
            model_scores = scores(start)
            start()  # if it did not
        except BaseException:
            worker.con.interrupt()  # the measures are not wanted now
            raise
        finally:
            if thread.ident is not None:
                thread.join()
        if failed:
            raise failed[0]
        with segmented(
            worker, as_of=as_of, scheme=scheme, rules=table, scores=model_scores, measured=True
        ) as (con, info):
            result = run_risk_arrow(
                con,
                f"SELECT r._row, r.customer_id, {select} FROM ({{risk}}) AS r "
                "JOIN seg_defs AS d ON d.segment = r.segment ORDER BY r._row",
                population_gap_days=info["population_gap_days"],
                wrap=SEGMENT_SQL,
            )
            found = measure_boundaries(con, scheme, info["as_of"], info["population_gap_days"])
    finally:
        worker.con.close()
    return _in_order(result, model_scores.num_rows), found


def _in_order(result: pa.Table, rows: int) -> pa.Table:
    """``result`` (sorted by ``_row``) by customer_id, without its ``_row`` column: as it
    is when each of the model's ``rows`` (which are by customer_id) is there once, else
    sorted (DuckDB and Arrow both compare text byte by byte)."""
    place = result.column("_row")
    result = result.drop_columns(["_row"])
    whole = place.null_count == 0 and result.num_rows == rows
    if whole and np.array_equal(place.to_numpy(), np.arange(rows)):
        return result
    return result.sort_by("customer_id")


def _per_customer(
    data: Any,
    columns: list[str],
    *,
    as_of: AsOf,
    scheme: str,
    rules: Rules,
    scores: pd.DataFrame | None,
    thresholds: RiskThresholds | None,
    customers: Sequence[str] | None = None,
    boundaries: RfmBoundaries | None = None,
    measure: bool = False,
) -> pd.DataFrame:
    """The ``columns`` (names from :data:`CUSTOMER_COLUMNS`) per customer, by customer_id;
    ``measure``: keep the RFM boundaries in ``attrs["boundaries"]``."""
    if customers is not None and boundaries is None:
        raise ArgumentError("scoring some customers only needs the boundaries of a full scoring")
    if boundaries is not None:
        scheme = boundaries.scheme
    table = resolve_rules(rules)
    renamed = {"churn_risk": "r.risk", "churn_reason": "r.reason", "action": "d.action",
               "offer": "d.offer"}  # fmt: skip
    select = ", ".join(f"{renamed.get(c, 'r.' + c)} AS {c}" for c in columns)
    few = customers is not None and boundaries is not None and scores is not None
    if few and isinstance(data, Store) and not measure:
        assert customers is not None and boundaries is not None and scores is not None
        return _some_customers(
            data, select, as_of, table, scores, thresholds, customers, boundaries
        )
    with segmented(
        data,
        as_of=as_of,
        scheme=scheme,
        rules=table,
        scores=scores,
        customers=customers,
        boundaries=boundaries,
    ) as (con, info):
        frame = run_segmented_sql(
            con,
            f"SELECT r.customer_id, {select} FROM ({{risk}}) AS r "
            "JOIN seg_defs AS d ON d.segment = r.segment ORDER BY r.customer_id",
            info,
            thresholds=thresholds,
        )
        found = (
            measure_boundaries(con, scheme, info["as_of"], info["population_gap_days"])
            if measure
            else None
        )
    frame = frame.set_index("customer_id")
    frame.attrs.update(public_info(info))
    if found is not None:
        frame.attrs["boundaries"] = found
    return frame


# The customers of $customers alone, scored against the boundaries of a full scoring
# ($recency, $frequency, $monetary: entry s - 2 is where score s begins, as in
# RFM_RESCORE_SQL), with the model's scores ($model_ids, $p_alive, $clv_if_retained) and
# the rule table ($grid_*, $cap_*, $def_*) as parameters: one statement, which reads
# only their orders. {measures} is RFM_MEASURES_SQL; {segmented} the risk and segment
# query (SEGMENT_SQL over RISK_SQL) over the CTE risk_input.
SOME_CUSTOMERS_SQL = """
WITH seg_orders AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, ordered_at, net_revenue
    FROM orders
    WHERE customer_id IN (SELECT unnest($customers))
),
{measures},
seg_model AS (
    SELECT CAST(unnest($model_ids) AS VARCHAR)     AS customer_id,
           CAST(unnest($p_alive) AS DOUBLE)         AS p_alive,
           CAST(unnest($clv_if_retained) AS DOUBLE) AS clv_if_retained
),
{scored}"""

# From the customers' measures on to their segments, against the boundaries of a full
# scoring: the rest of SOME_CUSTOMERS_SQL, over the CTEs measured and seg_model.
SCORED_SQL = """seg_rfm AS (
    SELECT
        c.*,
        CAST(1 + len(list_filter($recency, lambda b: c.days_since_last_order < b)) AS INTEGER)
                                                                AS r_score,
        CAST(1 + len(list_filter($frequency, lambda b: c.orders > b)) AS INTEGER)  AS f_score,
        CAST(1 + len(list_filter($monetary, lambda b: c.net_revenue > b)) AS INTEGER)  AS m_score
    FROM measured AS c
),
seg_complaints AS ({complaints}),
risk_input AS (
    SELECT c.*, m.p_alive, m.clv_if_retained, k.open_complaint
    FROM seg_rfm AS c
    LEFT JOIN seg_model AS m USING (customer_id)
    LEFT JOIN seg_complaints AS k USING (customer_id)
),
seg_grid AS (
    SELECT CAST(unnest($grid_r) AS BIGINT) AS r_score, CAST(unnest($grid_f) AS BIGINT) AS f_score,
           CAST(unnest($grid_m) AS BIGINT) AS m_score, CAST(unnest($grid_segment) AS VARCHAR)
           AS segment, CAST(unnest($grid_position) AS BIGINT) AS position
),
seg_caps AS (
    SELECT CAST(unnest($cap_risk) AS VARCHAR) AS risk, CAST(unnest($cap) AS BIGINT) AS cap
),
seg_defs AS (
    SELECT CAST(unnest($def_segment) AS VARCHAR) AS segment,
           CAST(unnest($def_action) AS VARCHAR)  AS action,
           CAST(unnest($def_offer) AS VARCHAR)   AS offer
)
SELECT r.customer_id, {select}
FROM ({{risk}}) AS r
JOIN seg_defs AS d ON d.segment = r.segment
ORDER BY r.customer_id
"""


def _some_customers(
    store: Store,
    select: str,
    as_of: AsOf,
    rules: SegmentRules,
    scores: pd.DataFrame,
    thresholds: RiskThresholds | None,
    customers: Sequence[str],
    boundaries: RfmBoundaries,
) -> pd.DataFrame:
    """:func:`_per_customer` for a few customers of a store with their model ``scores``:
    the rows :func:`segmented` gives them against ``boundaries``, in one statement."""
    day = observation_day(store, as_of)
    frame = scores if "customer_id" in scores.columns else scores.rename_axis("customer_id")
    frame = frame.reset_index() if "customer_id" not in frame.columns else frame
    columns = list(frame.columns)
    _require_model_columns(columns, "the scores given")
    clv = frame[_clv_inputs(columns)[0]].astype("float64")
    p_alive = frame["p_alive"].astype("float64")
    if "clv_if_retained" not in columns:  # the model's CLV weighs it by P(alive): undo that
        clv = (clv / p_alive).where(p_alive > 0)
    params: dict[str, Any] = {
        "customers": [str(c) for c in customers],
        "as_of": day,
        "as_of_end": dt.datetime.combine(day + dt.timedelta(days=1), dt.time()),
        "recency": list(boundaries.recency),
        "frequency": list(boundaries.frequency),
        "monetary": list(boundaries.monetary),
        "model_ids": [str(c) for c in frame["customer_id"]],
        "p_alive": _nulls(p_alive),
        "clv_if_retained": _nulls(clv),
        **_rule_params(rules, boundaries.scheme),
    }
    info = {
        "as_of": day.isoformat(),
        "scheme": boundaries.scheme,
        "rules": rules.source,
        "model": "scores",
        "population_gap_days": boundaries.population_gap_days,
    }
    sql = _some_customers_sql(select, has_feedback(store))
    result = run_risk_sql(
        store.con,
        sql,
        thresholds=thresholds,
        population_gap_days=boundaries.population_gap_days,
        gap_known=True,
        few_rows=True,
        extra_params=params,
        wrap=SEGMENT_SQL,
    )
    result = result.set_index("customer_id")
    result.attrs.update(public_info(info))
    return result


@functools.lru_cache(maxsize=8)
def _some_customers_sql(select: str, complaints: bool) -> str:
    scored = SCORED_SQL.format(
        select=select, complaints=(COMPLAINTS_SQL if complaints else NO_COMPLAINTS_SQL).strip()
    )
    return SOME_CUSTOMERS_SQL.format(measures=RFM_MEASURES_SQL.strip(), scored=scored)


# SCORED_SQL over measures and model scores handed in as the tables measured_input and
# model_input: what :func:`measured_segments` runs
MEASURED_SQL = """
WITH measured AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, orders, net_revenue, first_order_at,
           last_order_at, order_days, days_since_last_order, typical_gap_days
    FROM measured_input
),
seg_model AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(p_alive AS DOUBLE) AS p_alive,
           CAST(clv_if_retained AS DOUBLE) AS clv_if_retained
    FROM model_input
),
{scored}"""


def measured_segments(
    measured: Any, model: Any, boundaries: RfmBoundaries, *, rules: Rules = None
) -> pa.Table:
    """The segment columns of ``customer_scores`` (``customer_id`` then
    :data:`SEGMENT_SCORE_COLUMNS`, by customer_id) of customers measured elsewhere, scored
    against ``boundaries`` (:class:`~retain.segments.rfm.RfmBoundaries`, with its population
    gap): the rows a full scoring gives them when the boundaries are that scoring's.

    ``measured`` (a pandas frame or Arrow table) holds the RFM measures of
    :data:`~retain.segments.rfm.RFM_MEASURES_SQL` (``customer_id``, ``orders``,
    ``net_revenue``, ``first_order_at``, ``last_order_at``, ``order_days``,
    ``days_since_last_order``, ``typical_gap_days``); ``model`` the model's
    ``customer_id``, ``p_alive`` and ``clv_if_retained`` (null where unknown). No feedback
    is read: a churn reason cites no complaint. For scoring in Spark's executors
    (:mod:`retain.spark`), a batch of customers at a time."""
    table = resolve_rules(rules)
    renamed = {"churn_risk": "r.risk", "churn_reason": "r.reason"}
    select = ", ".join(f"{renamed.get(c, 'r.' + c)} AS {c}" for c in SEGMENT_SCORE_COLUMNS)
    sql = MEASURED_SQL.format(
        scored=SCORED_SQL.format(select=select, complaints=NO_COMPLAINTS_SQL.strip())
    )
    params: dict[str, Any] = {
        "recency": list(boundaries.recency),
        "frequency": list(boundaries.frequency),
        "monetary": list(boundaries.monetary),
        **_rule_params(table, boundaries.scheme),
    }
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("measured_input", measured)
        con.register("model_input", model)
        return run_risk_arrow(
            con,
            sql,
            population_gap_days=boundaries.population_gap_days,
            wrap=SEGMENT_SQL,
            extra_params=params,
            gap_known=True,
        )
    finally:
        con.close()


def has_feedback(data: Any) -> bool:
    """Whether ``data`` is a store with the feedback tables (whose open complaints the churn
    reasons cite; empty ones cost a join of nothing), without a query when it is writable
    (and so migrated): a rescoring of a few customers runs few statements."""
    return isinstance(data, Store) and (
        getattr(data, "migrated", False) or data.has_table("feedback_tags")
    )


def _nulls(values: pd.Series) -> list[float | None]:
    """The values as a list, NaN as None: a pandas frame scanned by DuckDB reads NaN as NULL."""
    return [None if v != v else float(v) for v in values.tolist()]


_RULE_PARAMS: dict[tuple[int, str], tuple[SegmentRules, dict[str, list[Any]]]] = {}


def _rule_params(rules: SegmentRules, scheme: str) -> dict[str, list[Any]]:
    """The rule table's grid, caps and segments as the lists SOME_CUSTOMERS_SQL takes,
    built once per rule table and scheme."""
    key = (id(rules), scheme)
    hit = _RULE_PARAMS.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    grid = rules.grid(scheme)
    defs = rules.table()
    grid = grid.merge(defs[["segment", "position"]], on="segment")
    caps = rules.caps(scheme)
    params: dict[str, list[Any]] = {
        "grid_r": [int(v) for v in grid["r_score"]],
        "grid_f": [int(v) for v in grid["f_score"]],
        "grid_m": [int(v) for v in grid["m_score"]],
        "grid_segment": [str(v) for v in grid["segment"]],
        "grid_position": [int(v) for v in grid["position"]],
        "cap_risk": [str(v) for v in caps["risk"]],
        "cap": [int(v) for v in caps["cap"]],
        "def_segment": [str(v) for v in defs["segment"]],
        "def_action": [str(v) for v in defs["action"]],
        "def_offer": [str(v) for v in defs["offer"]],
    }
    if len(_RULE_PARAMS) > 16:
        _RULE_PARAMS.clear()
    _RULE_PARAMS[key] = (rules, params)
    return params


def segment_summary(
    data: Any,
    *,
    as_of: AsOf = None,
    scheme: str = "quintiles",
    rules: Rules = None,
    scores: pd.DataFrame | None = None,
    thresholds: RiskThresholds | None = None,
) -> pd.DataFrame:
    """One row per segment (every segment of the rule table, best first, empty ones too).

    Columns: ``segment``; ``customers``; ``share_of_customers`` (0-1);
    ``net_revenue`` (total to the observation date, reporting currency);
    ``share_of_revenue`` (0-1); ``avg_orders``; ``avg_days_since_last_order``;
    ``at_risk`` (customers whose churn risk is high or lost); ``value_at_stake``
    (sum, currency, as defined in :mod:`retain.segments.risk`; missing without
    model scores); ``action``; ``offer``;
    ``description``. Arguments as in :func:`customer_segments`.
    """
    table = resolve_rules(rules)
    with segmented(data, as_of=as_of, scheme=scheme, rules=table, scores=scores) as (con, info):
        frame = run_segmented_sql(
            con,
            """
            WITH per_segment AS (
                SELECT
                    segment,
                    count(*)                                      AS customers,
                    sum(net_revenue)                              AS net_revenue,
                    avg(orders)                                   AS avg_orders,
                    avg(days_since_last_order)                    AS avg_days_since_last_order,
                    count(*) FILTER (WHERE risk IN ('high', 'lost')) AS at_risk,
                    sum(value_at_stake)                           AS value_at_stake
                FROM ({risk})
                GROUP BY segment
            )
            SELECT
                d.segment,
                coalesce(s.customers, 0)                                   AS customers,
                coalesce(s.customers, 0) / sum(coalesce(s.customers, 0)) OVER ()
                                                                           AS share_of_customers,
                coalesce(s.net_revenue, 0)                                 AS net_revenue,
                coalesce(s.net_revenue, 0)
                    / nullif(sum(coalesce(s.net_revenue, 0)) OVER (), 0)   AS share_of_revenue,
                s.avg_orders,
                s.avg_days_since_last_order,
                coalesce(s.at_risk, 0)                                     AS at_risk,
                CASE WHEN $has_model THEN coalesce(s.value_at_stake, 0) END AS value_at_stake,
                replace(d.action, $placeholder, 'their top products')      AS action,
                d.offer,
                d.description
            FROM seg_defs AS d
            LEFT JOIN per_segment AS s USING (segment)
            ORDER BY d.position
            """,
            info,
            thresholds=thresholds,
            extra_params={"has_model": info["model"] != "none", "placeholder": TOP_PRODUCTS},
        )
    frame["customers"] = frame["customers"].astype("int64")
    frame["at_risk"] = frame["at_risk"].astype("int64")
    frame.attrs.update(public_info(info))
    return frame


@contextlib.contextmanager
def segmented(
    data: Any,
    *,
    as_of: AsOf,
    scheme: str,
    rules: SegmentRules,
    scores: pd.DataFrame | pa.Table | None,
    customers: Sequence[str] | None = None,
    boundaries: RfmBoundaries | None = None,
    measured: bool = False,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict[str, Any]]]:
    """Set up the view ``risk_input``: per customer RFM, segment and model inputs.

    Also leaves ``seg_defs`` (the segments with their position) for reports.
    Everything it creates is temporary and dropped when the block ends.
    ``customers``: only these; ``boundaries``: score against these (and take their
    population gap) rather than rank the customers among themselves. ``measured``: the
    connection already holds the temp table ``seg_rfm`` of these orders and scheme.
    """
    levels = score_levels(scheme)
    if boundaries is not None and boundaries.scheme != scheme:
        raise ArgumentError(f"the boundaries are of {boundaries.scheme}, not {scheme}")
    grid = rules.grid(scheme)
    defs = rules.table()
    grid = grid.merge(defs[["segment", "position"]], on="segment")
    with orders_view(data, as_of, customers) as (con, params):
        created: list[str] = []
        try:
            con.register("seg_grid", grid)
            con.register("seg_defs", defs)
            con.register("seg_caps", rules.caps(scheme))
            if not measured:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE seg_rfm AS {RFM_SQL}",
                    {**params, "levels": levels},
                )
            created.append("TABLE seg_rfm")
            if boundaries is not None:
                rescore_with_boundaries(con, boundaries)
            model = _model_view(con, data, scores)
            created.append("VIEW seg_model")
            complaints = COMPLAINTS_SQL if has_feedback(data) else NO_COMPLAINTS_SQL
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE seg_complaints AS {complaints}",
                {"as_of_end": params["as_of_end"]} if complaints is COMPLAINTS_SQL else {},
            )
            created.append("TABLE seg_complaints")
            if isinstance(scores, pa.Table) and "_row" in scores.column_names:
                # each customer's row in the caller's scores, to give the result its order
                con.execute(
                    RISK_INPUT_SQL.replace("m.clv_if_retained", "m.clv_if_retained, m._row")
                )
            else:
                con.execute(RISK_INPUT_SQL)
            created.append("VIEW risk_input")
            if boundaries is not None:
                gap: tuple[Any, ...] | None = (boundaries.population_gap_days,)
            else:
                gap = con.execute("SELECT median(typical_gap_days) FROM seg_rfm").fetchall()[0]
            info = {
                "as_of": params["as_of"].isoformat(),
                "scheme": scheme,
                "rules": rules.source,
                "model": model,
                "population_gap_days": None if not gap or gap[0] is None else float(gap[0]),
                "as_of_end": params["as_of_end"],
            }
            yield con, info
        finally:
            for name in reversed(created):
                kind, _, obj = name.partition(" ")
                con.execute(f"DROP {kind} IF EXISTS {obj}")
            con.unregister("seg_grid")
            con.unregister("seg_defs")
            con.unregister("seg_caps")
            with contextlib.suppress(duckdb.Error):
                con.unregister("seg_scores_input")


def public_info(info: dict[str, Any]) -> dict[str, Any]:
    """What a result's ``attrs`` carry: as_of, scheme, rules and model."""
    return {k: info[k] for k in ("as_of", "scheme", "rules", "model")}


def _model_view(
    con: duckdb.DuckDBPyConnection, data: Any, scores: pd.DataFrame | pa.Table | None
) -> str:
    """Create the view ``seg_model(customer_id, p_alive, clv_if_retained)``; say where it came from."""
    if isinstance(scores, pa.Table):  # retain score's: customer_id, p_alive, clv_if_retained
        con.register("seg_scores_input", scores)
        row = ", _row" if "_row" in scores.column_names else ""
        con.execute(
            "CREATE OR REPLACE TEMP VIEW seg_model AS SELECT CAST(customer_id AS VARCHAR) "
            "AS customer_id, CAST(p_alive AS DOUBLE) AS p_alive, "
            f"CAST(clv_if_retained AS DOUBLE) AS clv_if_retained{row} FROM seg_scores_input"
        )
        return "scores"
    if scores is not None:
        frame = scores.copy()
        if "customer_id" not in frame.columns:
            frame = frame.rename_axis("customer_id").reset_index()
        _require_model_columns(list(frame.columns), "the scores given")
        clv = _clv_if_retained_sql(list(frame.columns))
        frame = frame[["customer_id", "p_alive", *_clv_inputs(list(frame.columns))]]
        con.register("seg_scores_input", frame)
        con.execute(
            "CREATE OR REPLACE TEMP VIEW seg_model AS SELECT CAST(customer_id AS VARCHAR) "
            f"AS customer_id, CAST(p_alive AS DOUBLE) AS p_alive, {clv} AS clv_if_retained "
            "FROM seg_scores_input"
        )
        return "scores"
    if isinstance(data, Store) and data.has_table("customer_scores"):
        columns = list(
            data.query(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'customer_scores'"
            )["column_name"]
        )
        if "p_alive" in columns and _clv_inputs(columns):
            clv = _clv_if_retained_sql(columns)
            con.execute(
                "CREATE OR REPLACE TEMP VIEW seg_model AS SELECT CAST(customer_id AS VARCHAR) "
                f"AS customer_id, CAST(p_alive AS DOUBLE) AS p_alive, {clv} AS clv_if_retained "
                "FROM customer_scores"
            )
            return "customer_scores"
    con.execute(
        "CREATE OR REPLACE TEMP VIEW seg_model AS SELECT CAST(NULL AS VARCHAR) AS customer_id, "
        "CAST(NULL AS DOUBLE) AS p_alive, CAST(NULL AS DOUBLE) AS clv_if_retained WHERE false"
    )
    return "none"


def _clv_inputs(columns: list[str]) -> list[str]:
    if "clv_if_retained" in columns:
        return ["clv_if_retained"]
    if "clv_12m" in columns:
        return ["clv_12m"]
    return []


def _clv_if_retained_sql(columns: list[str]) -> str:
    if "clv_if_retained" in columns:
        return "CAST(clv_if_retained AS DOUBLE)"
    # the model's CLV weighs the value if alive by P(alive): undo the weighting
    return "CASE WHEN p_alive > 0 THEN CAST(clv_12m AS DOUBLE) / p_alive END"


def _require_model_columns(columns: list[str], where: str) -> None:
    if "p_alive" not in columns or not _clv_inputs(columns):
        raise SchemaError(
            f"{where} need p_alive and clv_12m (or clv_if_retained) per customer; found {columns}"
        )
