"""Spark SQL texts of the summaries: the definitions of :mod:`retain.features` and of
:data:`retain.segments.rfm.RFM_MEASURES_SQL`, clause for clause, in Spark's dialect.

Each text reads a temporary view named by ``{src}`` with columns ``customer_id``,
``ts`` and ``amount`` (the orders); the days and times in ``{...}`` are literals that
:func:`literals` makes from dates, read in the session's time zone (UTC).
"""

from __future__ import annotations

import datetime as dt

from retain.features import GRAINS, UNIT_DAYS


def literals(
    end: dt.date, unit: str, grain: str, calibration_end: dt.date | None = None
) -> dict[str, str]:
    """The literals of the texts below for the observation day ``end`` (and a holdout's
    ``calibration_end``): the cut (the midnight after the day), the day's grain period,
    the unit in days."""

    def period(day: dt.date) -> str:
        start = day - dt.timedelta(days=day.weekday()) if grain == "W" else day
        return f"DATE '{start.isoformat()}'"

    values = {
        "grain": f"'{GRAINS[grain]}'",
        "unit_days": f"CAST({float(UNIT_DAYS[unit])!r} AS DOUBLE)",
        "cutoff": f"TIMESTAMP '{(end + dt.timedelta(days=1)).isoformat()} 00:00:00'",
        "end_day": f"DATE '{end.isoformat()}'",
        "end_period": period(end),
    }
    if calibration_end is not None:
        values.update(
            split=f"TIMESTAMP '{(calibration_end + dt.timedelta(days=1)).isoformat()} 00:00:00'",
            calibration_day=f"DATE '{calibration_end.isoformat()}'",
            calibration_period=period(calibration_end),
        )
    return values


# The orders counted: those of a customer, with a time, before the cut.
TX = """
    SELECT CAST(customer_id AS STRING) AS customer_id, CAST(ts AS TIMESTAMP) AS ts,
           CAST(amount AS DOUBLE) AS amount
    FROM {src}
    WHERE customer_id IS NOT NULL AND ts IS NOT NULL AND CAST(ts AS TIMESTAMP) < {cutoff}
"""

# features.SUMMARY_SQL
SUMMARY = (
    """
WITH tx AS ("""
    + TX
    + """),
periods AS (
    SELECT customer_id, date_trunc({grain}, ts) AS period, sum(amount) AS amount
    FROM tx
    GROUP BY customer_id, date_trunc({grain}, ts)
)
SELECT
    customer_id,
    count(*) - 1                                                           AS frequency,
    datediff(CAST(max(period) AS DATE), CAST(min(period) AS DATE)) / {unit_days} AS recency,
    datediff({end_period}, CAST(min(period) AS DATE)) / {unit_days}         AS T,
    CASE WHEN count(*) > 1
         THEN (sum(amount) - min_by(amount, period)) / (count(*) - 1)
         ELSE CAST(0.0 AS DOUBLE) END                                                      AS monetary
FROM periods
GROUP BY customer_id
"""
)

# features.SPLIT_SUMMARY_SQL
SPLIT_SUMMARY = (
    """
WITH tx AS ("""
    + TX
    + """),
periods AS (
    SELECT customer_id, date_trunc({grain}, ts) AS period, min(ts) AS first_ts,
           sum(amount) AS amount
    FROM tx
    GROUP BY customer_id, date_trunc({grain}, ts)
),
customers AS (
    SELECT
        customer_id,
        count(*)                                         AS periods,
        min(period)                                      AS first_period,
        max(period)                                      AS last_period,
        sum(amount)                                      AS amount,
        min_by(amount, period)                           AS first_amount,
        count(*) FILTER (WHERE first_ts >= {split})      AS holdout_periods,
        max(period) FILTER (WHERE first_ts < {split})    AS last_calibration_period,
        min(first_ts) FILTER (WHERE first_ts >= {split}) AS first_holdout_ts
    FROM periods
    GROUP BY customer_id
)
SELECT
    customer_id,
    periods - 1                                                            AS frequency,
    datediff(CAST(last_period AS DATE), CAST(first_period AS DATE)) / {unit_days} AS recency,
    datediff({end_period}, CAST(first_period AS DATE)) / {unit_days}        AS T,
    CASE WHEN periods > 1
         THEN (amount - first_amount) / (periods - 1)
         ELSE CAST(0.0 AS DOUBLE) END                                                      AS monetary,
    periods - holdout_periods - 1                                          AS calibration_frequency,
    datediff(CAST(last_calibration_period AS DATE), CAST(first_period AS DATE)) / {unit_days}
                                                                           AS calibration_recency,
    datediff({calibration_period}, CAST(first_period AS DATE)) / {unit_days} AS calibration_T,
    holdout_periods                                                        AS holdout_purchases,
    CAST(datediff(CAST(first_holdout_ts AS DATE), {calibration_day}) AS DOUBLE)
                                                                           AS first_holdout_day
FROM customers
"""
)

# features.HOLDOUT_DAYS_SQL
HOLDOUT_DAYS = (
    """
WITH tx AS ("""
    + TX
    + """),
later AS (
    SELECT customer_id, min(ts) AS first_ts
    FROM tx
    WHERE ts >= date_trunc({grain}, {split})
    GROUP BY customer_id, date_trunc({grain}, ts)
)
SELECT datediff(CAST(first_ts AS DATE), {calibration_day}) AS day, count(*) AS purchases
FROM later
WHERE first_ts >= {split}
  AND customer_id IN (SELECT customer_id FROM tx WHERE ts < {split})
GROUP BY datediff(CAST(first_ts AS DATE), {calibration_day})
ORDER BY day
"""
)

# segments.rfm.RFM_MEASURES_SQL: per_customer, then measured
RFM_MEASURES = (
    """
WITH tx AS ("""
    + TX
    + """),
per_customer AS (
    SELECT
        customer_id,
        count(*)                                                    AS orders,
        CAST(sum(CAST(amount AS DECIMAL(38, 6))) AS DOUBLE)         AS net_revenue,
        min(ts)                                                     AS first_order_at,
        max(ts)                                                     AS last_order_at,
        count(DISTINCT CAST(ts AS DATE))                            AS order_days
    FROM tx
    GROUP BY customer_id
)
SELECT
    customer_id,
    orders,
    coalesce(net_revenue, CAST(0.0 AS DOUBLE))                                     AS net_revenue,
    first_order_at,
    last_order_at,
    order_days,
    datediff({end_day}, CAST(last_order_at AS DATE))                AS days_since_last_order,
    CASE WHEN order_days > 1
         THEN datediff(CAST(last_order_at AS DATE), CAST(first_order_at AS DATE))
              / (order_days - 1)
    END                                                             AS typical_gap_days
FROM per_customer
"""
)

# What a fit's record says it read (scoring.DATA_RANGE_SQL) and the store's recent net
# revenue (guard.store_history): every order before the cut, a customer's or not.
HISTORY = """
SELECT CAST(min(CAST(ts AS TIMESTAMP)) FILTER (WHERE customer_id IS NOT NULL) AS DATE)
                                                                         AS first_day,
       CAST(max(CAST(ts AS TIMESTAMP)) FILTER (WHERE customer_id IS NOT NULL) AS DATE)
                                                                         AS last_day,
       CAST(min(CAST(ts AS TIMESTAMP)) AS DATE)                          AS first_any_day,
       count(*) FILTER (WHERE customer_id IS NOT NULL)                   AS orders,
       coalesce(sum(CAST(amount AS DOUBLE)) FILTER (
           WHERE CAST(ts AS TIMESTAMP) >= {recent_start}), 0.0)          AS revenue_12m
FROM {src}
WHERE ts IS NOT NULL AND CAST(ts AS TIMESTAMP) < {cutoff}
"""
