"""Readers for subscriptions: the canonical file and Stripe's subscriptions export.

A subscription is billed ``price`` x ``quantity`` every ``interval_count``
``billing_interval``\\ s from ``started_at`` (or the end of its free trial) until
``cancelled_at``. A change of plan or price is a new subscription that starts as the
old one ends: the customer's recurring revenue then moves up (expansion) or down
(contraction), see :mod:`retain.subscriptions`.

Rules, beyond each column's type:

- the billing interval is day, week, month or year (``monthly``, ``annual``... read as
  them); blank is month; the interval count a whole number from 1;
- price and quantity are 0 or more; a price in another currency needs its rate;
- a subscription cannot end before it starts, nor start after the observation date;
- one whose first payment never went through (status ``incomplete`` or
  ``incomplete_expired``) is no subscription, and one whose status says it ended
  (``canceled``, ``ended``...) needs the day it ended;
- a ``subscription_id`` seen before in the store replaces the stored row; twice in
  one file, the later row is quarantined.

Stripe's export (Dashboard > Billing > Subscriptions > Export) is read by its column
names: ``id``, ``Customer ID`` (or ``Customer Email``), ``Plan`` (or ``Product``,
``Price ID``), ``Amount`` (in the currency's units, as the Dashboard shows it),
``Quantity``, ``Interval``, ``Interval Count``, ``Currency``, ``Status``, ``Start
(UTC)`` (or ``Start Date (UTC)``, ``Created (UTC)``), ``Trial End (UTC)``, and for the
end: ``Ended At (UTC)``, else ``Current Period End (UTC)`` when ``Cancel At Period End``
is true, else ``Canceled At (UTC)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from retain.errors import SchemaError
from retain.schema import SUBSCRIPTIONS

if TYPE_CHECKING:
    from retain.ingest.load import IngestReport, Loader

INTERVALS = {
    "day": ("day", "days", "daily", "d"),
    "week": ("week", "weeks", "weekly", "w", "wk"),
    "month": ("month", "months", "monthly", "m", "mo", "mon"),
    "year": ("year", "years", "yearly", "annual", "annually", "y", "yr"),
}
NEVER_PAID = ("incomplete", "incomplete_expired")
ENDED = ("canceled", "cancelled", "ended", "expired", "churned")


def load(
    loader: Loader, columns: list[str], mapping: Mapping[str, str] | None, report: IngestReport
) -> None:
    """Validate the subscriptions staged in ``_raw`` (as
    :func:`retain.ingest.load_orders` does orders), quarantine the bad ones with their
    reason, and store the rest (a stored subscription_id is replaced)."""
    from retain.ingest.load import require, resolve_mapping

    resolved = resolve_mapping(SUBSCRIPTIONS, columns, mapping, loader.file)
    require(SUBSCRIPTIONS, resolved, columns, loader.file)
    _write(loader, "_raw", resolved, columns, report)


def load_stripe(loader: Loader, columns: list[str], report: IngestReport) -> None:
    """Stripe's subscriptions export, read by its column names (see the module's text)."""
    from retain.ingest.shopify import _col, _pick

    found = {
        "subscription_id": _pick(columns, "id", "Subscription ID"),
        "customer_id": _pick(columns, "Customer ID", "Customer", "Customer Email"),
        "price": _pick(columns, "Amount", "Plan Amount", "Price Amount"),
        "started_at": _pick(columns, "Start (UTC)", "Start Date (UTC)", "Created (UTC)"),
    }
    missing = [name for name, column in found.items() if column is None]
    if missing:
        raise SchemaError(
            f"{loader.file}: this Stripe subscriptions export lacks the columns for "
            f"{', '.join(missing)}. Found: {', '.join(columns)}. Needed: id, Customer ID, "
            "Amount, and Start (UTC) (or Start Date (UTC), Created (UTC)); nothing was stored"
        )
    picked = {
        "plan": _pick(columns, "Plan", "Product", "Price ID", "Plan ID"),
        "quantity": _pick(columns, "Quantity"),
        "interval": _pick(columns, "Interval", "Plan Interval"),
        "count": _pick(columns, "Interval Count", "Plan Interval Count"),
        "currency": _pick(columns, "Currency"),
        "status": _pick(columns, "Status"),
        "trial": _pick(columns, "Trial End (UTC)", "Trial End"),
        "ended": _pick(columns, "Ended At (UTC)", "Ended At"),
        "period_end": _pick(columns, "Current Period End (UTC)", "Current Period End"),
        "at_period_end": _pick(columns, "Cancel At Period End"),
        "canceled": _pick(columns, "Canceled At (UTC)", "Canceled At"),
    }
    c = {name: _col(column) for name, column in picked.items()}

    def text(sql: str) -> str:
        return f"nullif(trim(CAST({sql} AS VARCHAR)), '')"

    at_period_end = f"lower({text(c['at_period_end'])}) IN ('true', 'yes', '1')"
    loader.con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _stripe AS SELECT _retain_row,
            {_col(found["subscription_id"])} AS _retain_s_subscription_id,
            {_col(found["customer_id"])} AS _retain_s_customer_id,
            {c["plan"]} AS _retain_s_plan,
            {_col(found["price"])} AS _retain_s_price,
            {c["quantity"]} AS _retain_s_quantity,
            {c["interval"]} AS _retain_s_billing_interval,
            {c["count"]} AS _retain_s_interval_count,
            {_col(found["started_at"])} AS _retain_s_started_at,
            {c["trial"]} AS _retain_s_trial_ends_at,
            coalesce({text(c["ended"])},
                     CASE WHEN {at_period_end} THEN {text(c["period_end"])} END,
                     {text(c["canceled"])}) AS _retain_s_cancelled_at,
            {c["status"]} AS _retain_s_status,
            {c["currency"]} AS _retain_s_currency,
            * EXCLUDE (_retain_row)
        FROM _raw
        """
    )
    names = [n for n in SUBSCRIPTIONS.column_names if n != "source_file"]
    mapping = {name: f"_retain_s_{name}" for name in names}
    # the messages name the export's own columns
    labels = {name: column for name, column in found.items() if column is not None}
    canonical = {
        "plan": "plan",
        "quantity": "quantity",
        "interval": "billing_interval",
        "count": "interval_count",
        "currency": "currency",
        "status": "status",
        "trial": "trial_ends_at",
        "ended": "cancelled_at",
    }
    labels.update(
        {canonical[k]: column for k, column in picked.items() if k in canonical and column}
    )
    # the end comes from the first of these the row fills: a message names them all
    ends = [str(picked[k]) for k in ("ended", "period_end", "canceled") if picked[k]]
    if ends:
        labels["cancelled_at"] = " / ".join(ends)
    _write(loader, "_stripe", mapping, columns, report, labels=labels)


def _write(
    loader: Loader,
    source: str,
    mapping: Mapping[str, str],
    columns: list[str],
    report: IngestReport,
    *,
    labels: Mapping[str, str] | None = None,
) -> None:
    from retain.ingest.load import AFTER_AS_OF, CUSTOMER_KEY, _as_text, _lit

    def listed(values: tuple[str, ...]) -> str:
        return ", ".join(_lit(v) for v in values)

    interval = " ".join(
        f"WHEN lower(billing_interval) IN ({listed(aliases)}) THEN {_lit(name)}"
        for name, aliases in INTERVALS.items()
    )
    rate = " ".join(f"WHEN {_lit(k)} THEN {v!r}" for k, v in loader.rates.items())
    as_of = _lit(loader.as_of.isoformat(sep=" "))
    end_columns = " or ".join((labels or {}).get("cancelled_at", "cancelled_at").split(" / "))
    layers = [
        [
            ("customer_id", CUSTOMER_KEY),
            ("status", "lower(status)"),
            (
                "billing_interval",
                f"CASE WHEN _t_billing_interval IS NULL THEN 'month' {interval} END",
            ),
            ("quantity", "CASE WHEN _t_quantity IS NULL THEN 1 ELSE quantity END"),
            (
                "interval_count",
                "CASE WHEN _t_interval_count IS NULL THEN 1 ELSE interval_count END",
            ),
            ("currency", f"coalesce(upper(currency), {_lit(loader.currency)})"),
            ("source_file", _lit(loader.file)),
        ],
        [("_rate", f"CASE currency {rate} END")],
        [("price", "price * coalesce(_rate, 1)")],
    ]
    checks = [
        (
            "billing_interval IS NULL",
            "billing_interval",
            f"'unknown billing interval: got ''' || {_as_text('billing_interval')} || "
            "''', expected day, week, month or year'",
        ),
        (
            "interval_count IS NOT NULL AND (interval_count < 1 OR interval_count <> "
            "round(interval_count))",
            "interval_count",
            f"'interval count: got ' || {_as_text('interval_count')} || "
            "', expected a whole number from 1'",
        ),
        (
            f"abs(price * quantity) > {loader.max_amount()!r}",
            "quantity",
            f"'implausible charge: price ' || {_as_text('price')} || ' x quantity ' || "
            f"coalesce({_as_text('quantity')}, '1') || ', expected at most "
            f"{loader.max_amount():,.0f} a billing interval (the max_amount setting)'",
        ),
        (
            "_rate IS NULL",
            "currency",
            f"'unknown currency without a rate: got ''' || currency || ''', expected "
            f"{loader.currency} or a currency given a rate (--rate CODE=RATE)'",
        ),
        (
            f"started_at > TIMESTAMP {as_of}",
            "started_at",
            f"'starts {AFTER_AS_OF} {loader.as_of.date()}: got ' || {_as_text('started_at')}",
        ),
        (
            "cancelled_at < started_at",
            "cancelled_at",
            f"'ends before it starts: got ' || {_as_text('cancelled_at')} || ', started ' || "
            f"{_as_text('started_at')}",
        ),
        (
            f"status IN ({listed(NEVER_PAID)})",
            "status",
            "'status ' || status || ': its first payment never went through, so it is no "
            "subscription'",
        ),
        (
            f"status IN ({listed(ENDED)}) AND cancelled_at IS NULL",
            "cancelled_at",
            f"'status ' || status || ' but no day it ended: give ' || {_lit(end_columns)}",
        ),
    ]
    clean = loader.validate(
        SUBSCRIPTIONS,
        source,
        mapping,
        checks,
        layers,
        raw_columns=columns,
        labels=labels,
    )
    loader.quarantine_duplicates(clean, "subscription_id", "subscriptions")
    names = ", ".join(SUBSCRIPTIONS.column_names)
    loader.con.execute(
        f"INSERT OR REPLACE INTO subscriptions ({names}) SELECT {names} FROM {clean}"
    )
    report.subscriptions = loader.count(clean)
