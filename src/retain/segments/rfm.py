"""RFM scores: recency, frequency and monetary value, each scored 1-5 (or 1-4).

Per customer, from the orders placed on or before the observation date:

- recency: days from the last order to the observation date (0 = ordered
  that day); fewer days is better;
- frequency: number of orders;
- monetary: total net revenue, in the store's reporting currency.

Scoring rule (ties always share a score): with ``k`` levels (5 for quintiles,
4 for quartiles) and ``N`` customers, a value's share score is::

    share = 1 + floor(k * W / N)

where ``W`` is the number of customers with a strictly *worse* value. With no
ties this cuts the customers into ``k`` equal groups; customers with equal
values have the same ``W`` and so the same score, whatever their order in the
data. A large block of equal values (say 60% of customers with one order)
takes the score of its worst member (1), and the share score of the next
value up would jump over levels (to 1 + floor(5 x 0.6) = 4, leaving F2 and F3
empty). So a value scores at most one level above the next worse value, unless
the values better than it would not fit in the levels above then::

    step  = min(share, score of the next worse value + 1)
    score = max(step, min(share, k - number of distinct better values))

Two orders then score F2, three F3 and so on until the share score is reached
again, and no level is skipped; with fewer distinct values than levels, the
best values keep their share score (the one customer with 20 orders among
customers with 2 scores 5, not 2) and the gap stays below them. A score never
depends on how ties are broken.

Scoring one customer at a time (after a new order) cannot rank them against
everyone again without a pass over every customer. :class:`RfmBoundaries`
keeps where each score began in a full scoring; a customer scored against them
gets exactly the score the full scoring gave any customer with the same value.
The approximation: the population stays as it was at that scoring (the
customer's own move does not shift anyone else's rank), and recency is counted
in days to the customer's own observation date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from retain.config import check_not_before_first_order, observation_day, parse_as_of
from retain.errors import DataError, SchemaError
from retain.segments.rules import score_levels
from retain.store import Store

AsOf = str | dt.date | dt.datetime | pd.Timestamp | None

# Per customer measures (the CTEs per_customer and measured), over the view or CTE
# seg_orders: what both the full scoring and the scoring of some customers start from.
RFM_MEASURES_SQL = """
per_customer AS (
    SELECT
        customer_id,
        count(*)                                  AS orders,
        -- summed exactly, so that equal totals are equal whatever the order of summing
        CAST(sum(CAST(net_revenue AS DECIMAL(38, 6))) AS DOUBLE)  AS net_revenue,
        min(ordered_at)                           AS first_order_at,
        max(ordered_at)                           AS last_order_at,
        -- distinct order days; a list per customer beats count(DISTINCT) here
        len(list_distinct(list(CAST(ordered_at AS DATE))))  AS order_days
    FROM seg_orders
    WHERE ordered_at < $as_of_end
    GROUP BY customer_id
),
measured AS MATERIALIZED (
    SELECT
        customer_id,
        orders,
        coalesce(net_revenue, 0.0)                              AS net_revenue,
        first_order_at,
        last_order_at,
        order_days,
        date_diff('day', CAST(last_order_at AS DATE), $as_of)  AS days_since_last_order,
        -- mean days between the distinct days with an order; none for one-day buyers
        CASE WHEN order_days > 1
             THEN date_diff('day', CAST(first_order_at AS DATE), CAST(last_order_at AS DATE))
                  / (order_days - 1)
        END                                                     AS typical_gap_days
    FROM per_customer
)
"""

# Per customer measures, then the three scores. Reads the view seg_orders.
# The number of customers strictly worse than a value is counted once per
# distinct value (a few thousand rows) and joined back, which is several times
# faster than rank() windows over every customer and gives the same counts.
RFM_SQL = """
WITH {measures},
{r_scored},
{f_scored},
{m_scored}
SELECT
    c.*,
    CAST(r.score AS INTEGER)  AS r_score,
    CAST(f.score AS INTEGER)  AS f_score,
    CAST(m.score AS INTEGER)  AS m_score
FROM measured AS c
JOIN r_scored AS r USING (days_since_last_order)
JOIN f_scored AS f USING (orders)
JOIN m_scored AS m USING (net_revenue)
"""


def _scored_cte(
    name: str, column: str, worse_first: str, source: str = "measured", count: str = "count(*)"
) -> str:
    """CTEs ``{name}_share`` and ``{name}_scored``: the score of each distinct value of
    ``column`` (ordered worst first by ``worse_first``), by the rule of the module docstring.
    ``source`` holds the values, ``count`` the customers a group of them stands for (one a
    row; ``sum(n)`` over a table of values already counted in a column ``n``).

    ``step = min(share, previous step + 1)`` unrolls to ``place + min(share - place)``
    over the values up to this one, ``place`` being the value's place (1 = worst) among
    the distinct values; a value has ``distinct - place`` better ones.
    """
    return f"""{name}_share AS (
    SELECT {column},
           1 + ($levels * (sum({count}) OVER (ORDER BY {worse_first}) - {count}))
               // sum({count}) OVER ()                       AS share,
           row_number() OVER (ORDER BY {worse_first})        AS place,
           count(*) OVER ()                                  AS distinct_values
    FROM {source} GROUP BY {column}
),
{name}_scored AS (
    SELECT {column},
           greatest(
               place + min(share - place) OVER (ORDER BY place ROWS UNBOUNDED PRECEDING),
               least(share, $levels - (distinct_values - place))
           )                                                 AS score
    FROM {name}_share
)"""


RFM_SQL = RFM_SQL.format(
    measures=RFM_MEASURES_SQL.strip(),
    # more days since the last order is worse
    r_scored=_scored_cte("r", "days_since_last_order", "days_since_last_order DESC"),
    f_scored=_scored_cte("f", "orders", "orders"),
    m_scored=_scored_cte("m", "net_revenue", "net_revenue"),
)

# Where each score begins, from the scored table seg_rfm: for s = 2..levels, a
# recency of fewer days than the fewest among customers scored below s, or more
# orders (net revenue) than the most among customers scored below s, earns at least s.
RFM_BOUNDS_SQL = """
WITH r AS (SELECT r_score AS score, min(days_since_last_order) AS v FROM seg_rfm GROUP BY r_score),
     f AS (SELECT f_score AS score, max(orders) AS v FROM seg_rfm GROUP BY f_score),
     m AS (SELECT m_score AS score, max(net_revenue) AS v FROM seg_rfm GROUP BY m_score)
SELECT
    s.score,
    (SELECT min(v) FROM r WHERE r.score < s.score)  AS recency,
    (SELECT max(v) FROM f WHERE f.score < s.score)  AS frequency,
    (SELECT max(v) FROM m WHERE m.score < s.score)  AS monetary
FROM range(2, $levels + 1) AS s(score)
ORDER BY s.score
"""

# Score the customers of seg_rfm against boundaries kept from a full scoring
# (the registered frame seg_bounds: one row per score from 2 up).
RFM_RESCORE_SQL = """
UPDATE seg_rfm SET
    r_score = 1 + (SELECT count(*) FROM seg_bounds b WHERE seg_rfm.days_since_last_order < b.recency),
    f_score = 1 + (SELECT count(*) FROM seg_bounds b WHERE seg_rfm.orders > b.frequency),
    m_score = 1 + (SELECT count(*) FROM seg_bounds b WHERE seg_rfm.net_revenue > b.monetary)
"""


@dataclass(frozen=True)
class RfmBoundaries:
    """Where each RFM score began in a full scoring, to score customers one at a time.

    For score ``s`` (2 up to the scheme's levels), entry ``s - 2`` of each list:
    a customer earns at least ``s`` with fewer days since the last order than
    ``recency``, more orders than ``frequency``, more net revenue (reporting
    currency) than ``monetary``. ``population_gap_days`` is the median typical
    gap between orders of the repeat customers (days), which one-day buyers'
    churn risk is measured against; ``customers`` and ``as_of`` say which
    population the boundaries came from.
    """

    scheme: str
    as_of: str
    customers: int
    population_gap_days: float | None
    recency: tuple[float, ...]
    frequency: tuple[float, ...]
    monetary: tuple[float, ...]

    def frame(self) -> pd.DataFrame:
        """One row per score from 2 up: ``score``, ``recency``, ``frequency``, ``monetary``."""
        return pd.DataFrame(
            {
                "score": range(2, len(self.recency) + 2),
                "recency": list(self.recency),
                "frequency": list(self.frequency),
                "monetary": list(self.monetary),
            },
            dtype="float64",
        )


def measure_boundaries(
    con: duckdb.DuckDBPyConnection, scheme: str, as_of: str, population_gap_days: float | None
) -> RfmBoundaries:
    """The :class:`RfmBoundaries` of the scored customers in the temp table ``seg_rfm``."""
    rows = con.execute(RFM_BOUNDS_SQL, {"levels": score_levels(scheme)}).fetchall()
    customers = con.execute("SELECT count(*) FROM seg_rfm").fetchall()[0][0]

    def column(i: int) -> tuple[float, ...]:
        return tuple(float("nan") if r[i] is None else float(r[i]) for r in rows)

    return RfmBoundaries(
        scheme=scheme,
        as_of=as_of,
        customers=int(customers),
        population_gap_days=population_gap_days,
        recency=column(1),
        frequency=column(2),
        monetary=column(3),
    )


# The scores of counted values ({name}_counts: a value and ``n``, the customers with it),
# and every value beside its score in the shape of seg_rfm that RFM_BOUNDS_SQL reads.
COUNTED_SQL = """
CREATE OR REPLACE TEMP TABLE seg_rfm AS
WITH {r_scored},
{f_scored},
{m_scored}
SELECT score AS r_score, days_since_last_order, NULL AS f_score, NULL AS orders,
       NULL AS m_score, NULL AS net_revenue FROM r_scored
UNION ALL
SELECT NULL, NULL, score, orders, NULL, NULL FROM f_scored
UNION ALL
SELECT NULL, NULL, NULL, NULL, score, net_revenue FROM m_scored
""".format(
    r_scored=_scored_cte(
        "r", "days_since_last_order", "days_since_last_order DESC", "r_counts", "sum(n)"
    ),
    f_scored=_scored_cte("f", "orders", "orders", "f_counts", "sum(n)"),
    m_scored=_scored_cte("m", "net_revenue", "net_revenue", "m_counts", "sum(n)"),
)


def boundaries_from_counts(
    recency: pd.DataFrame,
    frequency: pd.DataFrame,
    monetary: pd.DataFrame,
    *,
    scheme: str,
    as_of: str,
    population_gap_days: float | None,
) -> RfmBoundaries:
    """The :class:`RfmBoundaries` a full scoring of the customers would measure, from how
    many customers have each value: ``recency`` (``days_since_last_order``, ``n``),
    ``frequency`` (``orders``, ``n``) and ``monetary`` (``net_revenue``, ``n``), one row a
    distinct value. The same rule and the same boundaries as :data:`RFM_SQL` over the
    customers themselves; for populations counted elsewhere (Spark: :mod:`retain.spark`)."""
    con = duckdb.connect()
    try:
        for name, frame in (("r_counts", recency), ("f_counts", frequency), ("m_counts", monetary)):
            con.register(name, frame)
        con.execute(COUNTED_SQL, {"levels": score_levels(scheme)})
        customers = int(recency["n"].sum())
        found = measure_boundaries(con, scheme, as_of, population_gap_days)
    finally:
        con.close()
    return RfmBoundaries(
        scheme=found.scheme,
        as_of=found.as_of,
        customers=customers,
        population_gap_days=found.population_gap_days,
        recency=found.recency,
        frequency=found.frequency,
        monetary=found.monetary,
    )


def rescore_with_boundaries(con: duckdb.DuckDBPyConnection, boundaries: RfmBoundaries) -> None:
    """Replace the scores in the temp table ``seg_rfm`` by those ``boundaries`` give."""
    con.register("seg_bounds", boundaries.frame())
    try:
        con.execute(RFM_RESCORE_SQL)
    finally:
        con.unregister("seg_bounds")


RFM_COLUMNS = [
    "orders",
    "net_revenue",
    "first_order_at",
    "last_order_at",
    "days_since_last_order",
    "typical_gap_days",
    "r_score",
    "f_score",
    "m_score",
]


def rfm_scores(data: Any, *, as_of: AsOf = None, scheme: str = "quintiles") -> pd.DataFrame:
    """RFM measures and scores, one row per customer, indexed by ``customer_id``.

    ``data`` is a :class:`~retain.store.Store` (its ``orders``) or a pandas,
    polars or Arrow frame of orders with ``customer_id``, ``ordered_at`` and
    ``net_revenue`` (one row per order). ``as_of`` is the observation date:
    orders after that day are ignored and recency is counted to it (default:
    the day of the last order). ``scheme`` is "quintiles" (scores 1-5) or
    "quartiles" (1-4); the scoring rule is in this module's docstring.

    Columns: ``orders``; ``net_revenue`` (total, reporting currency);
    ``first_order_at``, ``last_order_at``; ``days_since_last_order`` (days);
    ``typical_gap_days`` (mean days between distinct order days, missing for
    customers who ordered on one day only); ``r_score``, ``f_score``,
    ``m_score`` (higher is better); ``rfm`` (the three scores as text, "545").
    """
    levels = score_levels(scheme)
    with orders_view(data, as_of) as (con, params):
        frame = (
            con.sql(
                f"SELECT customer_id, {', '.join(RFM_COLUMNS)}, "
                f"r_score || f_score || m_score AS rfm FROM ({RFM_SQL}) ORDER BY customer_id",
                params={**params, "levels": levels},
            )
            .to_arrow_table()
            .to_pandas()
        )
    frame = frame.set_index("customer_id")
    frame.attrs.update({"as_of": params["as_of"].isoformat(), "scheme": scheme})
    return frame


@contextlib.contextmanager
def orders_view(
    data: Any, as_of: AsOf, customers: Sequence[str] | None = None
) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict[str, Any]]]:
    """Expose orders as the temp view ``seg_orders`` and resolve the observation date.

    Yields the connection and the query parameters ``as_of`` (a date) and
    ``as_of_end`` (midnight after it: orders strictly before it count).
    ``customers``: only these customers' orders.
    """
    only = ""
    if customers is not None:
        only = " WHERE CAST(customer_id AS VARCHAR) IN (SELECT customer_id FROM seg_customers)"
    if isinstance(data, Store):
        con = data.con
        if customers is not None:
            con.register("seg_customers", _customer_frame(customers))
        con.execute(
            "CREATE OR REPLACE TEMP VIEW seg_orders AS SELECT CAST(customer_id AS VARCHAR) "
            f"AS customer_id, ordered_at, net_revenue FROM orders{only}"
        )
        registered = None
    else:
        frame = data
        if type(frame).__module__.startswith("polars"):
            frame = frame.to_arrow()
        columns = (
            list(frame.column_names) if hasattr(frame, "column_names") else list(frame.columns)
        )
        missing = [c for c in ("customer_id", "ordered_at", "net_revenue") if c not in columns]
        if missing:
            raise SchemaError(
                f"orders lack the column(s) {missing}; found {columns}. "
                "Expected one row per order with customer_id, ordered_at and net_revenue."
            )
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        registered = "seg_orders_input"
        con.register(registered, frame)
        if customers is not None:
            con.register("seg_customers", _customer_frame(customers))
        con.execute(
            "CREATE OR REPLACE TEMP VIEW seg_orders AS SELECT * FROM (SELECT CAST(customer_id "
            "AS VARCHAR) AS customer_id, CAST(ordered_at AS TIMESTAMP) AS ordered_at, "
            f"CAST(net_revenue AS DOUBLE) AS net_revenue FROM {registered} "
            f"WHERE customer_id IS NOT NULL AND ordered_at IS NOT NULL){only}"
        )
    try:
        # a store's observation day follows its settings; a DataFrame's, its own orders
        day = observation_day(data, as_of) if isinstance(data, Store) else resolve_as_of(con, as_of)
        params = {
            "as_of": day,
            "as_of_end": dt.datetime.combine(day + dt.timedelta(days=1), dt.time()),
        }
        yield con, params
    finally:
        con.execute("DROP VIEW IF EXISTS seg_orders")
        if customers is not None:
            con.unregister("seg_customers")
        if registered is not None:
            con.unregister(registered)
            con.close()


def _customer_frame(customers: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.Series(list(customers), dtype="object").astype(str)})


def resolve_as_of(con: duckdb.DuckDBPyConnection, as_of: AsOf) -> dt.date:
    """The observation day of orders given as a DataFrame: ``as_of`` as a date, or the day
    of the last order in ``seg_orders`` (a store's: :func:`retain.config.observation_day`)."""
    first_last = con.execute(
        "SELECT CAST(min(ordered_at) AS DATE), CAST(max(ordered_at) AS DATE) FROM seg_orders"
    ).fetchall()[0]
    if not first_last or first_last[1] is None:
        raise DataError("there are no orders to score: ingest orders first")
    first, last = first_last
    if as_of is None:
        return last
    day = parse_as_of(as_of).date()
    check_not_before_first_order(day, first)
    return day
