"""Win-back lists and audience exports: who to contact, why, with what, ranked by value at stake.

Consent: a customer whose ``accepts_marketing`` is false, or who unsubscribed or was
marked do-not-contact since (``contact_suppressions``), has opted out and is
never exported, whatever the options. A customer whose consent is unknown
(``accepts_marketing`` missing: CDNOW files and plain order files do not say)
is left out of exports by default too, since not having said no is not the
same as having said yes; ``include_unknown_consent=True`` (CLI
``--include-unknown-consent``) adds them. Every customer stays in analyses
(segments, risk, summaries) regardless of consent.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from retain.errors import DataError
from retain.segments.assign import (
    Rules,
    public_info,
    resolve_rules,
    run_segmented_sql,
    segmented,
)
from retain.segments.rfm import AsOf
from retain.segments.risk import RISK_LEVELS, RiskThresholds
from retain.segments.rules import TOP_PRODUCTS
from retain.store import Store, open_store

WINBACK = "win-back"
"""The audience name for the win-back list (see :func:`winback_list`)."""

AUDIENCE_COLUMNS = [
    "customer_id",
    "email",
    "name",
    "segment",
    "action",
    "offer",
    "risk",
    "reason",
    "value_at_stake",
    "top_products",
]

LIST_COLUMNS = [
    "customer_id",
    "risk",
    "reason",
    "value_at_stake",
    "segment",
    "action",
    "offer",
    "top_products",
    "days_since_last_order",
    "typical_gap_days",
    "p_alive",
    "orders",
    "net_revenue",
    "email",
    "name",
    "accepts_marketing",
]

# Picks customers from the risk query, then adds contact details and their most
# bought products (order lines of their orders up to the observation date).
PICK_SQL = """
WITH picked AS MATERIALIZED (
    SELECT *, count(*) OVER () AS _total, sum(value_at_stake) OVER () AS _stake
    FROM ({risk}) WHERE {where}
    ORDER BY value_at_stake DESC NULLS LAST, net_revenue DESC, customer_id
    LIMIT $limit
),
bought AS (
    SELECT
        o.customer_id,
        l.sku,
        arg_max(coalesce(l.name, l.sku), o.ordered_at)  AS product,
        count(DISTINCT l.order_id)                     AS orders,
        sum(coalesce(l.quantity, 1))                   AS units,
        max(o.ordered_at)                              AS last_bought
    FROM order_lines AS l
    JOIN orders AS o USING (order_id)
    WHERE o.ordered_at < $as_of_end
      AND o.customer_id IN (SELECT customer_id FROM picked)
    GROUP BY o.customer_id, l.sku
),
ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY customer_id ORDER BY orders DESC, units DESC, last_bought DESC, sku
        ) AS product_rank
    FROM bought
),
top AS (
    SELECT customer_id, list(product ORDER BY product_rank) AS top_products
    FROM ranked
    WHERE product_rank <= $top_n
    GROUP BY customer_id
)
SELECT
    p.customer_id,
    p.risk,
    p.reason,
    p.value_at_stake,
    p.segment,
    replace(d.action, $placeholder,
            coalesce(_and_list(t.top_products), 'their usual products'))  AS action,
    d.offer,
    coalesce(t.top_products, [])                                         AS top_products,
    p.days_since_last_order,
    p.typical_gap_days,
    p.p_alive,
    p.orders,
    p.net_revenue,
    c.email,
    c.name,
    -- an opt-out recorded since the customers file (an unsubscribe link, a bounce) wins
    CASE WHEN s.customer_id IS NOT NULL THEN false ELSE c.accepts_marketing END
                                                                         AS accepts_marketing,
    p._total,
    p._stake
FROM picked AS p
JOIN seg_defs AS d USING (segment)
LEFT JOIN customers AS c USING (customer_id)
LEFT JOIN ({opted_out}) AS s USING (customer_id)
LEFT JOIN top AS t USING (customer_id)
ORDER BY p.value_at_stake DESC NULLS LAST, p.net_revenue DESC, p.customer_id
"""

AND_LIST_MACRO = (
    "CREATE OR REPLACE TEMP MACRO _and_list(l) AS CASE "
    "WHEN l IS NULL OR len(l) = 0 THEN NULL WHEN len(l) = 1 THEN l[1] "
    "ELSE array_to_string(l[1:len(l) - 1], ', ') || ' and ' || l[len(l)] END"
)


def winback_list(
    store: Store | str | Path,
    *,
    as_of: AsOf = None,
    min_risk: str = "high",
    limit: int | None = None,
    top_n: int = 3,
    scheme: str = "quintiles",
    rules: Rules = None,
    scores: pd.DataFrame | None = None,
    thresholds: RiskThresholds | None = None,
    all_lost: bool = False,
) -> pd.DataFrame:
    """At-risk and lapsed customers worth winning back, most value at stake first.

    Customers whose churn risk is ``min_risk`` or worse (default "high": high
    and lost; "medium" adds medium), but of the lost customers only those of
    segments marked ``valuable`` in the rule table (At Risk, Can't Lose Them,
    ...): the other lost customers (Hibernating, Lost) get their segment's
    low-cost action, not a win-back; ``all_lost=True`` lists them too. With
    model scores, only customers with something at stake (value at stake above
    0) are listed. ``attrs["total"]`` and ``attrs["value_at_stake"]`` count and
    sum every customer the list holds before ``limit``. Columns :data:`LIST_COLUMNS`: the risk
    and its reason, ``value_at_stake`` (reporting currency; missing without
    model scores, in which case the list is ranked by ``net_revenue`` to
    date), the segment, its action (with the customer's own products where the
    action names them) and offer, ``top_products`` (up to ``top_n``, most often
    bought first; empty when the store has no order lines), contact details and
    consent. Every customer is listed whatever their consent; use
    :func:`audience` to export. Other arguments as in
    :func:`~retain.segments.customer_segments`.
    """
    if min_risk not in RISK_LEVELS:
        raise DataError("unknown risk level", value=min_risk, expected=" or ".join(RISK_LEVELS))
    if limit is not None and limit < 0:
        raise DataError("the number of customers to list cannot be negative", value=limit)
    levels = list(RISK_LEVELS[RISK_LEVELS.index(min_risk) :])
    where = "risk IN (" + ", ".join(f"'{level}'" for level in levels) + ")"
    where += " AND (value_at_stake IS NULL OR value_at_stake > 0)"
    if not all_lost:
        where += " AND (risk <> 'lost' OR segment IN (SELECT segment FROM seg_defs WHERE valuable))"
    frame = _pick(
        store,
        where,
        {"limit": limit},
        as_of=as_of,
        top_n=top_n,
        scheme=scheme,
        rules=rules,
        scores=scores,
        thresholds=thresholds,
    )
    return frame


def audience(
    store: Store | str | Path,
    segment: str,
    *,
    as_of: AsOf = None,
    include_unknown_consent: bool = False,
    top_n: int = 3,
    scheme: str = "quintiles",
    rules: Rules = None,
    scores: pd.DataFrame | None = None,
    thresholds: RiskThresholds | None = None,
) -> pd.DataFrame:
    """Customers of one segment (or ``"win-back"``: the win-back list) to contact.

    Opted-out customers are never included; customers with unknown consent only
    with ``include_unknown_consent`` (see the module docstring). Columns
    :data:`AUDIENCE_COLUMNS`, most value at stake first. ``attrs`` count those
    left out: ``opted_out`` and ``unknown_consent``. Other arguments as in
    :func:`~retain.segments.customer_segments`.
    """
    table = resolve_rules(rules)
    if segment.strip().lower().replace(" ", "-") in (WINBACK, "winback"):
        frame = winback_list(
            store,
            as_of=as_of,
            top_n=top_n,
            scheme=scheme,
            rules=table,
            scores=scores,
            thresholds=thresholds,
        )
    else:
        name = table.segment(segment).name
        frame = _pick(
            store,
            "segment = $segment",
            {"segment": name, "limit": None},
            as_of=as_of,
            top_n=top_n,
            scheme=scheme,
            rules=table,
            scores=scores,
            thresholds=thresholds,
        )
    consent = frame["accepts_marketing"]
    opted_out = consent.eq(False) & consent.notna()
    unknown = consent.isna()
    keep = ~opted_out & (~unknown | include_unknown_consent)
    result = frame.loc[keep, AUDIENCE_COLUMNS].reset_index(drop=True)
    result.attrs.update(
        {
            **frame.attrs,
            "opted_out": int(opted_out.sum()),
            "unknown_consent": 0 if include_unknown_consent else int(unknown.sum()),
        }
    )
    return result


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")
"""A text cell starting with one of these is a formula to a spreadsheet (OWASP's list, and
the NUL of OWASP ASVS 1.2.10: a reader that drops it would see the formula behind it)."""


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells a spreadsheet shows as text, never runs.

    A text cell starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or a NUL
    (:data:`FORMULA_STARTS`) gets a single quote in front (``'=1+1``), as OWASP advises
    against formula injection: a customer could name themselves ``=HYPERLINK(...)``.
    Numbers stay numbers: a negative amount is not text and is written as it is. A
    carriage return inside a cell becomes a line feed, which the CSV writer quotes (it
    leaves a bare carriage return unquoted, and readers take it for the end of the row).
    """
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype.kind in "biufcmM":  # numbers, booleans and dates: no text
            continue
        safe[column] = safe[column].map(_safe_cell)
    return safe


def _safe_cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_STARTS):
        value = "'" + value
    return value.replace("\r\n", "\n").replace("\r", "\n")


def write_audience(frame: pd.DataFrame, format: str = "csv", out: str | Path | None = None) -> str:
    """The audience as CSV (products joined with "; ", value at stake to the cent) or JSON;
    written to ``out`` when given.

    In the CSV, text that a spreadsheet would run as a formula starts with a single quote
    (see :func:`spreadsheet_safe`); the JSON keeps every value as it is. Returns the text.
    """
    if format == "csv":
        buffer = io.StringIO()
        flat = frame.copy()
        flat["top_products"] = flat["top_products"].map(lambda products: "; ".join(products))
        if "value_at_stake" in flat:  # money, to the cent, as the pages show it
            flat["value_at_stake"] = flat["value_at_stake"].round(2)
        flat = spreadsheet_safe(flat)
        flat.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        text = buffer.getvalue()
    elif format == "json":
        records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
        for record, products in zip(records, frame["top_products"], strict=True):
            record["top_products"] = list(products)
        text = json.dumps(records, indent=2) + "\n"
    else:
        raise DataError("unknown export format", value=format, expected="csv or json")
    if out is not None:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot write the audience to {out}: {exc.strerror}") from None
    return text


def _add_learned_reasons(db: Store, frame: pd.DataFrame, as_of: Any) -> None:
    """Append to each listed customer's churn reason what the learned model saw raise
    their risk (``learned_scores.reasons``, written by ``retain score`` when the fit kept
    a learned model), when those scores are as of the same day."""
    if frame.empty or not db.has_table("learned_scores"):
        return
    found = dict(
        db.con.execute(
            "SELECT customer_id, reasons FROM learned_scores WHERE reasons IS NOT NULL "
            "AND as_of = CAST(? AS DATE) AND customer_id IN (SELECT unnest(?))",
            [str(as_of), [str(c) for c in frame["customer_id"]]],
        ).fetchall()
    )
    if found:
        frame["reason"] = [
            f"{reason}; the learned model: {found[c]}" if c in found else reason
            for c, reason in zip(frame["customer_id"].astype(str), frame["reason"], strict=True)
        ]


def _opted_out(store: Store) -> str:
    """The customers who refused marketing since their customers file said otherwise
    (``contact_suppressions``, kept by retain.campaigns), as a query."""
    if not store.has_table("contact_suppressions"):  # a store older than that table
        return "SELECT NULL::VARCHAR AS customer_id WHERE false"
    return (
        "SELECT DISTINCT customer_id FROM contact_suppressions WHERE scope IN ('marketing', 'all')"
    )


def _pick(
    store: Store | str | Path,
    where: str,
    params: dict[str, Any],
    *,
    as_of: AsOf,
    top_n: int,
    scheme: str,
    rules: Rules,
    scores: pd.DataFrame | None,
    thresholds: RiskThresholds | None,
) -> pd.DataFrame:
    if top_n < 0:
        raise DataError("the number of top products cannot be negative", value=top_n)
    db = open_store(store, read_only=not isinstance(store, Store))
    try:
        db.require_orders()
        table = resolve_rules(rules)
        with segmented(db, as_of=as_of, scheme=scheme, rules=table, scores=scores) as (con, info):
            con.execute(AND_LIST_MACRO)
            frame = run_segmented_sql(
                con,
                PICK_SQL.replace("{where}", where).replace("{opted_out}", _opted_out(db)),
                info,
                thresholds=thresholds,
                extra_params={
                    **params,
                    "as_of_end": info["as_of_end"],
                    "top_n": top_n,
                    "placeholder": TOP_PRODUCTS,
                },
            )
        _add_learned_reasons(db, frame, info["as_of"])
    finally:
        if db is not store:
            db.close()
    frame["top_products"] = frame["top_products"].map(list)
    frame.attrs.update(public_info(info))
    frame.attrs["total"] = int(frame["_total"].iloc[0]) if len(frame) else 0
    stake = frame["_stake"].iloc[0] if len(frame) else None
    frame.attrs["value_at_stake"] = None if stake is None or pd.isna(stake) else float(stake)
    return frame[LIST_COLUMNS]
