"""Churn risk per customer, with a reason a person can read and the value at stake.

Three signals, and the worst of them sets the risk:

- the model's P(alive), the probability the customer is still active;
- how overdue the customer is: days since the last order divided by their own
  typical gap between orders. Customers who ordered on one day only have no
  gap of their own; they are measured against the typical gap of the repeat
  customers (the median of their gaps), and their reason says so;
- an absolute bound: a customer silent for more than ``lapsed_days`` (365)
  is lost, whatever their rhythm or the model say.

======== ======================== ============================== ==============
risk     P(alive) (default cuts)  or overdue by (default cuts)   or silent for
======== ======================== ============================== ==============
lost     below 0.10               6 or more typical gaps         over 365 days
high     below 0.30               3 or more typical gaps
medium   below 0.60               1.5 or more typical gaps
low      otherwise                otherwise
======== ======================== ============================== ==============

A missing P(alive) (no model scores) leaves the other signals alone; with
none the risk is missing.

Value at stake, one definition everywhere (customer scores, segment summary,
win-back list, audiences): what the business loses over the CLV horizon if the
customer is not won back, net of what it expects from them anyway. Retained,
the customer is worth their CLV if retained; not won back, the business
expects P(alive) x CLV if retained (the model's CLV). The difference is::

    value at stake = (1 - P) x CLV if retained

where the P(alive) used is the model's, lowered to the upper P(alive) cut of
the customer's risk level when their own rhythm or the absolute bound rate
them worse than the model does (a customer called lost is taken as at most
10% alive, high at most 30%, medium at most 60%): a model that cannot see a
customer slipping (BG/NBD gives every one-day buyer P(alive) 1) does not
leave a customer flagged at risk with nothing at stake. So the value at stake
lies between 0 and the CLV if retained, is more than 0 for every customer at
risk with a CLV, and is in the currency of the CLV; missing without model
scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from retain.errors import DataError, SchemaError
from retain.feedback import COMPLAINT_SQL

RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high", "lost")


@dataclass(frozen=True)
class RiskThresholds:
    """Cut points of the risk levels: P(alive) below, or overdue by at least (typical
    gaps); ``lapsed_days``: silent for more days than this, a customer is lost."""

    p_alive_medium: float = 0.60
    p_alive_high: float = 0.30
    p_alive_lost: float = 0.10
    overdue_medium: float = 1.5
    overdue_high: float = 3.0
    overdue_lost: float = 6.0
    lapsed_days: float = 365.0

    def check(self) -> None:
        if not 0 <= self.p_alive_lost <= self.p_alive_high <= self.p_alive_medium <= 1:
            raise DataError(
                "P(alive) cut points must satisfy 0 <= lost <= high <= medium <= 1",
                value=(self.p_alive_lost, self.p_alive_high, self.p_alive_medium),
            )
        if not 0 < self.overdue_medium <= self.overdue_high <= self.overdue_lost:
            raise DataError(
                "overdue cut points must satisfy 0 < medium <= high <= lost",
                value=(self.overdue_medium, self.overdue_high, self.overdue_lost),
            )
        if not self.lapsed_days > 0:
            raise DataError(
                "the days of silence after which a customer is lost must be more than 0",
                value=self.lapsed_days,
            )


# Reads the view risk_input(days_since_last_order, typical_gap_days, p_alive,
# clv_if_retained, ...) and keeps its other columns.
RISK_SQL = """
WITH measured AS (
    SELECT
        *,
        CAST(days_since_last_order AS DOUBLE)
            / nullif(coalesce(typical_gap_days, $population_gap_days), 0)  AS overdue_ratio
    FROM risk_input
),
leveled AS (
    SELECT
        *,
        CASE
            WHEN p_alive IS NULL AND overdue_ratio IS NULL
                 AND days_since_last_order <= $lapsed_days THEN NULL
            ELSE greatest(
                CASE WHEN days_since_last_order > $lapsed_days THEN 3 ELSE 0 END,
                CASE WHEN p_alive IS NULL THEN 0
                     WHEN p_alive < $p_alive_lost THEN 3
                     WHEN p_alive < $p_alive_high THEN 2
                     WHEN p_alive < $p_alive_medium THEN 1
                     ELSE 0 END,
                CASE WHEN overdue_ratio IS NULL THEN 0
                     WHEN overdue_ratio >= $overdue_lost THEN 3
                     WHEN overdue_ratio >= $overdue_high THEN 2
                     WHEN overdue_ratio >= $overdue_medium THEN 1
                     ELSE 0 END)
        END AS risk_level
    FROM measured
)
SELECT
    * EXCLUDE (risk_level),
    ['low', 'medium', 'high', 'lost'][risk_level + 1]  AS risk,
    concat_ws('; ',
        CASE WHEN typical_gap_days IS NULL THEN 'only order ' ELSE 'last order ' END
        || CASE days_since_last_order
               WHEN 0 THEN 'today'
               WHEN 1 THEN '1 day ago'
               ELSE CAST(days_since_last_order AS BIGINT) || ' days ago' END,
        CASE
            WHEN typical_gap_days IS NOT NULL
                THEN 'usually orders every ' || _days(typical_gap_days)
            WHEN $population_gap_days IS NOT NULL
                THEN 'repeat customers usually order every ' || _days($population_gap_days)
        END
        -- how late, when lateness is what raises the risk: the same page then
        -- shows why a customer the model thinks active is at risk
        || CASE WHEN overdue_ratio >= $overdue_medium
                THEN ': ' || printf('%.1f', overdue_ratio) || ' gaps without an order'
                ELSE '' END,
        CASE
            WHEN p_alive IS NULL THEN NULL
            WHEN p_alive > 0 AND p_alive < 0.005 THEN 'under 1%'
            WHEN p_alive < 1 AND p_alive >= 0.995 THEN 'over 99%'
            ELSE CAST(round(100 * p_alive) AS BIGINT) || '%'
        END || ' likely still active',
        open_complaint
    )                                                  AS reason,
    -- (1 - P(alive)) x CLV if retained, P(alive) at most the upper cut of the risk level
    -- (least and greatest skip NULLs: no model, no value at stake)
    CASE WHEN p_alive IS NOT NULL AND clv_if_retained IS NOT NULL THEN
        greatest(clv_if_retained, 0) * (1 - least(
            p_alive,
            [1.0, $p_alive_medium, $p_alive_high, $p_alive_lost][risk_level + 1]
        ))
    END                                                AS value_at_stake
FROM leveled
"""

# Each customer's open complaint (the input risk_input's open_complaint), over seg_rfm
# (the customers' last orders) and $as_of_end: their latest complaint (COMPLAINT_SQL) said
# after their last order (nothing bought since; a text dated by its day alone counts from
# that day) and, for a ticket, not marked solved or closed.
COMPLAINTS_SQL = f"""
SELECT c.customer_id,
       'open complaint: ' || replace(array_to_string(arg_max(t.topics, f.created_at), ', '),
                                     '_', ' ')
       || ' (' || strftime(max(f.created_at), '%Y-%m-%d') || ')'  AS open_complaint
FROM seg_rfm AS c
JOIN feedback AS f ON CAST(f.customer_id AS VARCHAR) = c.customer_id
JOIN feedback_tags AS t USING (feedback_id)
WHERE f.created_at < $as_of_end AND {COMPLAINT_SQL}
  AND (f.created_at >= c.last_order_at
       OR (CAST(f.created_at AS TIME) = TIME '00:00:00'
           AND CAST(f.created_at AS DATE) = CAST(c.last_order_at AS DATE)))
  AND coalesce(lower(trim(f.status)), '') NOT IN ('solved', 'closed', 'resolved', 'done')
GROUP BY c.customer_id
"""
NO_COMPLAINTS_SQL = (
    "SELECT CAST(NULL AS VARCHAR) AS customer_id, CAST(NULL AS VARCHAR) AS open_complaint "
    "WHERE false"
)

DAYS_MACRO = (
    "CREATE OR REPLACE TEMP MACRO _days(x) AS "
    "CASE WHEN round(x) = 1 THEN 'day' ELSE CAST(round(x) AS BIGINT) || ' days' END"
)

RISK_INPUT_COLUMNS = ("days_since_last_order", "typical_gap_days", "p_alive", "clv_if_retained")


def churn_risk(
    customers: pd.DataFrame,
    *,
    thresholds: RiskThresholds | None = None,
    population_gap_days: float | None = None,
) -> pd.DataFrame:
    """Risk level, reason and value at stake for each row of ``customers``.

    ``customers`` has one row per customer (index kept) and the columns:

    - ``days_since_last_order``: days from the last order to the observation date;
    - ``typical_gap_days``: mean days between the customer's order days, missing
      (NaN) for a customer who ordered on one day only;
    - ``p_alive``: probability the customer is still active (NaN if unknown);
    - ``clv_if_retained``: predicted value of the customer if retained, in the
      reporting currency (NaN if unknown).

    ``population_gap_days`` is the gap one-day buyers are measured against
    (days; default: the median ``typical_gap_days`` of the others).

    Returns a frame with the same index and ``risk`` (low, medium, high, lost),
    ``reason`` (e.g. "last order 140 days ago; usually orders every 30 days: 4.7 gaps
    without an order; 12% likely still active"; the gaps when the customer is late), ``value_at_stake`` (clv_if_retained x
    (1 - p_alive), with p_alive at most the upper cut of the risk level: see the
    module docstring; currency) and ``overdue_ratio`` (days since the last order
    over the gap used).
    """
    missing = [c for c in RISK_INPUT_COLUMNS if c not in customers.columns]
    if missing:
        raise SchemaError(
            f"churn risk needs the column(s) {missing}; found {list(customers.columns)}"
        )
    p_alive = pd.to_numeric(customers["p_alive"], errors="coerce")
    if ((p_alive < 0) | (p_alive > 1)).any():
        bad = p_alive[(p_alive < 0) | (p_alive > 1)]
        raise DataError(
            "P(alive) must be a probability",
            column="p_alive",
            value=float(bad.iloc[0]),
            expected="a number from 0 to 1",
        )
    days = pd.to_numeric(customers["days_since_last_order"], errors="coerce")
    if days.isna().any() or (days < 0).any():
        raise DataError(
            "days since the last order must be known and not negative",
            column="days_since_last_order",
            value=days[days.isna() | (days < 0)].iloc[0],
            expected="a whole number of days >= 0",
        )
    frame = pd.DataFrame(
        {
            "_row": np.arange(len(customers)),
            "days_since_last_order": days.to_numpy(dtype="int64"),
            "typical_gap_days": pd.to_numeric(customers["typical_gap_days"], errors="coerce")
            .astype("float64")
            .to_numpy(),
            "p_alive": p_alive.astype("float64").to_numpy(),
            "clv_if_retained": pd.to_numeric(customers["clv_if_retained"], errors="coerce")
            .astype("float64")
            .to_numpy(),
        }
    )
    con = duckdb.connect()
    try:
        con.register("risk_frame", frame)
        # NaN is not NULL in SQL: make missing values NULL so the rules see them as unknown.
        con.execute(
            "CREATE TEMP VIEW risk_input AS SELECT _row, days_since_last_order, "
            "CASE WHEN isnan(typical_gap_days) THEN NULL ELSE typical_gap_days END AS typical_gap_days, "
            "CASE WHEN isnan(p_alive) THEN NULL ELSE p_alive END AS p_alive, "
            "CASE WHEN isnan(clv_if_retained) THEN NULL ELSE clv_if_retained END AS clv_if_retained, "
            "CAST(NULL AS VARCHAR) AS open_complaint FROM risk_frame"
        )
        result = run_risk_sql(
            con,
            "SELECT _row, risk, reason, value_at_stake, overdue_ratio FROM ({risk}) ORDER BY _row",
            thresholds=thresholds,
            population_gap_days=population_gap_days,
        )
    finally:
        con.close()
    result.index = customers.index
    return result.drop(columns="_row")


def run_risk_sql(
    con: duckdb.DuckDBPyConnection,
    outer_sql: str,
    *,
    thresholds: RiskThresholds | None = None,
    population_gap_days: float | None = None,
    extra_params: dict[str, Any] | None = None,
    wrap: str | None = None,
    gap_known: bool = False,
    few_rows: bool = False,
) -> pd.DataFrame:
    """Run ``outer_sql`` with ``{risk}`` replaced by the risk query over the view ``risk_input``.

    ``wrap``: a query over ``{risk}`` (the risk query) that takes its place in ``outer_sql``.
    ``gap_known``: ``population_gap_days`` is taken as given even when None (a full
    scoring found no repeat customers), not measured on ``risk_input``. ``few_rows``: the
    result is a handful of rows, fetched without a second binding of the query.
    """
    sql, params = _risk_query(
        con,
        outer_sql,
        thresholds=thresholds,
        population_gap_days=population_gap_days,
        extra_params=extra_params,
        wrap=wrap,
        gap_known=gap_known,
    )
    if few_rows:  # the same frame; binding this query once saves more than Arrow would
        return con.execute(sql, params).df()
    # through Arrow: several times faster than .df() for a million rows of text
    return con.sql(sql, params=params).to_arrow_table().to_pandas()


def run_risk_arrow(
    con: duckdb.DuckDBPyConnection,
    outer_sql: str,
    *,
    population_gap_days: float | None = None,
    wrap: str | None = None,
    extra_params: dict[str, Any] | None = None,
    gap_known: bool = False,
) -> pa.Table:
    """:func:`run_risk_sql` with the default thresholds, its rows as an Arrow table (for a
    caller that writes them back to the store: no pandas copy of a million text cells)."""
    sql, params = _risk_query(
        con,
        outer_sql,
        thresholds=None,
        population_gap_days=population_gap_days,
        extra_params=extra_params,
        wrap=wrap,
        gap_known=gap_known,
    )
    return con.sql(sql, params=params).to_arrow_table()


def _risk_query(
    con: duckdb.DuckDBPyConnection,
    outer_sql: str,
    *,
    thresholds: RiskThresholds | None,
    population_gap_days: float | None,
    extra_params: dict[str, Any] | None = None,
    wrap: str | None = None,
    gap_known: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The statement and parameters :func:`run_risk_sql` runs."""
    thresholds = thresholds or RiskThresholds()
    thresholds.check()
    con.execute(DAYS_MACRO)
    if population_gap_days is None and not gap_known:
        population_gap_days = con.execute(
            "SELECT median(typical_gap_days) FROM risk_input"
        ).fetchall()[0][0]
    params: dict[str, Any] = {
        **asdict(thresholds),
        "population_gap_days": None if population_gap_days is None else float(population_gap_days),
        **(extra_params or {}),
    }
    risk = RISK_SQL.replace("$population_gap_days", "CAST($population_gap_days AS DOUBLE)")
    if wrap is not None:
        risk = wrap.replace("{risk}", risk)
    return outer_sql.replace("{risk}", risk), params
