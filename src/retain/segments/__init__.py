"""Segments that say what to do: RFM scores, named segments, churn risk, win-back lists.

::

    from retain.segments import segment_summary, winback_list, audience
    segment_summary(store)                 # one row per segment, with its action
    winback_list(store, limit=50)          # who is slipping away, why, value at stake
    audience(store, "Can't Lose Them")     # who to contact (consent respected)

- :func:`rfm_scores`: recency, frequency and monetary scores 1-5 (or 1-4),
  ties in the same score (rule in :mod:`retain.segments.rfm`).
- :func:`load_rules`: the rule table naming segments from scores, with each
  segment's action and offer (default: ``default_segments.toml``), and the
  caps of the recency score by churn risk, so that a customer at risk or
  silent for over a year is never in a segment that says "recent".
- :func:`customer_segments`: per customer scores, segment, action, churn risk
  with reason and value at stake; :func:`segment_scores` is its part that
  ``retain score`` writes to ``customer_scores``; with :class:`RfmBoundaries`
  it scores a few customers against an earlier full scoring.
- :func:`churn_risk`: the risk rules alone, on per-customer columns; its
  module (:mod:`retain.segments.risk`) defines the value at stake, the one
  definition every report uses: (1 - P(alive)) x CLV if retained, what a
  win-back that retained the customer would add over the CLV horizon to what
  is expected from them anyway (never more than the CLV if retained).
- :func:`segment_summary`, :func:`winback_list`, :func:`audience`,
  :func:`write_audience`, :func:`segment_migration`.
"""

from retain.segments.assign import (
    CUSTOMER_COLUMNS,
    SEGMENT_SCORE_COLUMNS,
    customer_segments,
    segment_scores,
    segment_summary,
)
from retain.segments.audiences import (
    AUDIENCE_COLUMNS,
    LIST_COLUMNS,
    WINBACK,
    audience,
    winback_list,
    write_audience,
)
from retain.segments.migration import SegmentMigration, segment_migration
from retain.segments.rfm import RfmBoundaries, rfm_scores
from retain.segments.risk import RISK_LEVELS, RiskThresholds, churn_risk
from retain.segments.rules import (
    DEFAULT_RULES_PATH,
    SCHEMES,
    Rule,
    Segment,
    SegmentRules,
    load_rules,
)

__all__ = [
    "AUDIENCE_COLUMNS",
    "CUSTOMER_COLUMNS",
    "DEFAULT_RULES_PATH",
    "LIST_COLUMNS",
    "RISK_LEVELS",
    "SCHEMES",
    "SEGMENT_SCORE_COLUMNS",
    "WINBACK",
    "RfmBoundaries",
    "RiskThresholds",
    "Rule",
    "Segment",
    "SegmentMigration",
    "SegmentRules",
    "audience",
    "churn_risk",
    "customer_segments",
    "load_rules",
    "rfm_scores",
    "segment_migration",
    "segment_scores",
    "segment_summary",
    "winback_list",
    "write_audience",
]
