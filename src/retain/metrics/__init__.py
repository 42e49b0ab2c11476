"""Descriptive metrics: CLV, retention and churn, cohorts, CAC, trend alerts.

::

    from retain.metrics import overview, retention, cohorts, clv_cac, alerts
    overview(store, margin=0.3)           # the headline numbers, JSON-ready
    retention(store, "quarter")           # retention and churn rate per quarter
    cohorts(store)                        # activity and CLV curve by first-order month
    clv_cac(store, margin=0.3)            # CAC, CLV:CAC and payback per channel
    alerts(store)                         # recent drops unlikely under the baseline

Every function takes a :class:`~retain.store.Store` first and computes in DuckDB
over its ``orders``, ``customers`` and ``marketing_spend`` tables. Periods are
calendar months, quarters or years in UTC; ``as_of`` is the observation day
(default: the store's ``as_of`` setting, else the day of the last order), and later orders are ignored. Money is in
the reporting currency, net of discounts, refunds and fees; ``margin`` is the
fraction of it kept, in (0, 1]. Rates and shares in tables are percentages;
:func:`lifespan` and :func:`formula_clv` take rates as fractions.

- CLV: :func:`customer_metrics`, :func:`lifespan`, :func:`formula_clv`,
  :func:`business_clv`, :func:`subscription_clv`.
- Retention: :func:`retention`, :func:`pooled_retention` (the headline figure),
  :func:`repeat_retention` (cohort repeat-purchase retention), :func:`period_metrics`,
  :func:`repeat_purchase_rate`. The activity window defaults to the store's purchase
  rhythm (see :mod:`retain.metrics.retention`).
- Cohorts: :func:`cohorts`, :func:`cohort_matrix`.
- Acquisition: :func:`cac`, :func:`clv_cac`, and :func:`acquisition_report` (both).
- Alerts: :func:`alerts`. Overview: :func:`overview`, and :func:`metrics_report`
  (what ``retain metrics`` prints).
"""

from retain.metrics._common import MAX_WINDOW_DAYS
from retain.metrics.acquisition import (
    CAC_COLUMNS,
    CHANNEL_COLUMNS,
    acquisition_report,
    cac,
    clv_cac,
)
from retain.metrics.alerts import ALERT_COLUMNS, METRIC_NAMES, alerts
from retain.metrics.clv import (
    CUSTOMER_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    business_clv,
    customer_metrics,
    formula_clv,
    lifespan,
    subscription_clv,
)
from retain.metrics.cohorts import COHORT_COLUMNS, MATRIX_VALUES, cohort_matrix, cohorts
from retain.metrics.overview import OVERVIEW_KEYS, REPORT_PERIOD_COLUMNS, metrics_report, overview
from retain.metrics.retention import (
    PERIOD_COLUMNS,
    RETENTION_COLUMNS,
    period_metrics,
    pooled_retention,
    repeat_purchase_rate,
    repeat_retention,
    retention,
)

__all__ = [
    "ALERT_COLUMNS",
    "CAC_COLUMNS",
    "CHANNEL_COLUMNS",
    "COHORT_COLUMNS",
    "CUSTOMER_COLUMNS",
    "MATRIX_VALUES",
    "MAX_WINDOW_DAYS",
    "METRIC_NAMES",
    "OVERVIEW_KEYS",
    "PERIOD_COLUMNS",
    "REPORT_PERIOD_COLUMNS",
    "RETENTION_COLUMNS",
    "SUBSCRIPTION_COLUMNS",
    "acquisition_report",
    "alerts",
    "business_clv",
    "cac",
    "clv_cac",
    "cohort_matrix",
    "cohorts",
    "customer_metrics",
    "formula_clv",
    "lifespan",
    "metrics_report",
    "overview",
    "period_metrics",
    "pooled_retention",
    "repeat_purchase_rate",
    "repeat_retention",
    "retention",
    "subscription_clv",
]
