"""The canonical tables of the store and their columns, in one place.

Every money column is in the store's reporting currency and is net of nothing
unless its name says so. ``net_revenue`` is what the business keeps from an
order: gross less discounts, refunds, fees and commissions; shipping and taxes
are excluded. Timestamps are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    description: str
    required: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    description: str = ""
    # DuckDB keeps a primary key in an index that slows bulk loads several
    # times over; large tables keep their key unique in the ingest instead.
    enforce_key: bool = True

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ",\n    ".join(f"{c.name} {c.sql_type}" for c in self.columns)
        key = f",\n    PRIMARY KEY ({', '.join(self.key)})" if self.key and self.enforce_key else ""
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {cols}{key}\n)"


ORDERS = Table(
    "orders",
    (
        Column("order_id", "VARCHAR NOT NULL", "the order's identifier, unique in the store", True),
        Column("customer_id", "VARCHAR NOT NULL", "who placed it", True),
        Column("ordered_at", "TIMESTAMP NOT NULL", "when it was placed, UTC", True),
        Column("currency", "VARCHAR", "currency the order was placed in (ISO 4217)"),
        Column("gross", "DOUBLE", "order value before discounts, shipping and taxes"),
        Column("discount", "DOUBLE", "discounts given"),
        Column("shipping", "DOUBLE", "shipping charged (not revenue)"),
        Column("tax", "DOUBLE", "taxes charged (not revenue)"),
        Column("fees", "DOUBLE", "fees and commissions paid on the order"),
        Column("refunded", "DOUBLE", "money refunded"),
        Column("net_revenue", "DOUBLE NOT NULL", "gross - discount - refunded - fees"),
        Column("channel", "VARCHAR", "sales or acquisition channel of the order"),
        Column("source_file", "VARCHAR", "file the order was ingested from"),
        # last, where ALTER TABLE puts it in a store made before it
        Column("discount_code", "VARCHAR", "the discount or coupon code the order used"),
    ),
    key=("order_id",),
    description="one row per order",
    # unique all the same: every writer goes through retain.ingest.purchases.write, which
    # keeps one row per order_id in orders and excluded_orders together
    enforce_key=False,
)

ORDER_LINES = Table(
    "order_lines",
    (
        Column("order_id", "VARCHAR NOT NULL", "the order the line belongs to", True),
        Column("sku", "VARCHAR NOT NULL", "product identifier", True),
        Column("name", "VARCHAR", "product name"),
        Column("category", "VARCHAR", "product category or type"),
        Column("quantity", "DOUBLE", "units bought"),
        Column("unit_price", "DOUBLE", "price of one unit"),
    ),
    description="one row per product line of an order",
)

CUSTOMERS = Table(
    "customers",
    (
        Column("customer_id", "VARCHAR NOT NULL", "the customer's identifier", True),
        Column("email", "VARCHAR", "e-mail address, lower-cased"),
        Column("name", "VARCHAR", "full name"),
        Column("birthday", "DATE", "date of birth"),
        Column("first_seen", "TIMESTAMP", "first order or sign-up, UTC"),
        Column("acquisition_channel", "VARCHAR", "channel that brought the customer"),
        Column("timezone", "VARCHAR", "IANA time zone"),
        Column("locale", "VARCHAR", "language and region, e.g. en-US"),
        Column("accepts_marketing", "BOOLEAN", "opted in to marketing; false means never message"),
        # last, where ALTER TABLE puts them in a store made before them
        Column(
            "payment_fingerprint",
            "VARCHAR",
            "a token of the customer's card or wallet (no card data): referral guard",
        ),
        Column(
            "address_fingerprint",
            "VARCHAR",
            "a token of the customer's delivery address: referral guard",
        ),
    ),
    key=("customer_id",),
    description="one row per customer",
)

MARKETING_SPEND = Table(
    "marketing_spend",
    (
        Column("date", "DATE NOT NULL", "day of the spend", True),
        Column("channel", "VARCHAR NOT NULL", "acquisition channel", True),
        Column("amount", "DOUBLE NOT NULL", "money spent, reporting currency", True),
    ),
    key=("date", "channel"),
    description="marketing spend per day and channel",
)

SUBSCRIPTIONS = Table(
    "subscriptions",
    (
        Column("subscription_id", "VARCHAR NOT NULL", "the subscription's identifier", True),
        Column("customer_id", "VARCHAR NOT NULL", "who subscribed", True),
        Column("plan", "VARCHAR", "the plan or product subscribed to"),
        Column(
            "price",
            "DOUBLE NOT NULL",
            "what one billing interval costs the customer after discounts, reporting currency",
            True,
        ),
        Column("quantity", "DOUBLE", "seats or units (blank: 1); the charge is price x quantity"),
        Column("billing_interval", "VARCHAR", "day, week, month or year (blank: month)"),
        Column("interval_count", "DOUBLE", "billed every this many intervals (blank: 1)"),
        Column("started_at", "TIMESTAMP NOT NULL", "when it started, UTC", True),
        Column("trial_ends_at", "TIMESTAMP", "end of a free trial: it pays from then on"),
        Column(
            "cancelled_at",
            "TIMESTAMP",
            "when it ended or ends (a cancellation at the period's end: that end); blank: active",
        ),
        Column("status", "VARCHAR", "as the source says: active, canceled, past_due, trialing..."),
        Column("currency", "VARCHAR", "currency it is billed in (ISO 4217)"),
        Column("source_file", "VARCHAR", "file the subscription was ingested from"),
    ),
    key=("subscription_id",),
    description=(
        "one row per subscription; a change of plan or price is a new subscription that "
        "starts as the old one ends"
    ),
)

FEEDBACK = Table(
    "feedback",
    (
        Column(
            "feedback_id", "VARCHAR NOT NULL", "the answer's, review's or ticket's identifier", True
        ),
        Column("customer_id", "VARCHAR NOT NULL", "who said it: customer id or e-mail", True),
        Column("created_at", "TIMESTAMP NOT NULL", "when it was said, UTC", True),
        Column("kind", "VARCHAR", "survey, review or ticket (blank: from the columns filled)"),
        Column("nps", "DOUBLE", "survey: how likely to recommend, 0 to 10"),
        Column("csat", "DOUBLE", "survey: satisfaction, 1 to 5"),
        Column("stars", "DOUBLE", "review: rating, 1 to 5"),
        Column("text", "VARCHAR", "what they wrote: the answer, review or ticket body"),
        Column("subject", "VARCHAR", "ticket: its subject"),
        Column("sku", "VARCHAR", "review: the product reviewed"),
        Column("status", "VARCHAR", "ticket: as the help desk says (open, solved...)"),
        Column("tags", "VARCHAR", "tags the source gave it, comma separated"),
        Column("source_file", "VARCHAR", "file it was ingested from"),
    ),
    key=("feedback_id",),
    description="one row per survey answer, review or support ticket",
)

EVENTS = Table(
    "events",
    (
        Column("event_id", "VARCHAR NOT NULL", "the event's identifier (blank: from its content)"),
        Column(
            "kind",
            "VARCHAR NOT NULL",
            "page_view, product_view, add_to_cart or checkout_started",
            True,
        ),
        Column("customer_id", "VARCHAR", "who: customer id or e-mail (blank: anonymous)"),
        Column("anonymous_id", "VARCHAR", "the visitor's anonymous id (a cookie's, a device's)"),
        Column("sku", "VARCHAR", "the product viewed or added to the cart"),
        Column("occurred_at", "TIMESTAMP NOT NULL", "when, UTC", True),
        Column("source_file", "VARCHAR", "file (or API call) it came from"),
    ),
    key=("event_id",),
    description="one row per browse or cart event of a visitor or customer",
)

QUARANTINE = Table(
    "quarantine",
    (
        Column("source_file", "VARCHAR NOT NULL", "file the row came from"),
        Column("row_number", "BIGINT NOT NULL", "1-based row as a spreadsheet shows it"),
        Column("target", "VARCHAR NOT NULL", "table the row was meant for"),
        Column("column_name", "VARCHAR", "column at fault, when one is"),
        Column("reason", "VARCHAR NOT NULL", "why the row was set aside"),
        Column("raw", "VARCHAR", "the row as read, JSON"),
        Column("ingested_at", "TIMESTAMP NOT NULL", "when it was set aside, UTC"),
    ),
    description="rows that could not be loaded, with the reason",
)

INGESTED_FILES = Table(
    "ingested_files",
    (
        Column("source_file", "VARCHAR NOT NULL", "path as given"),
        Column("format", "VARCHAR NOT NULL", "reader used"),
        Column("sha256", "VARCHAR NOT NULL", "content hash"),
        Column("rows_read", "BIGINT NOT NULL", "data rows in the file"),
        Column("rows_loaded", "BIGINT NOT NULL", "rows that reached their table"),
        Column("rows_quarantined", "BIGINT NOT NULL", "rows set aside"),
        Column("ingested_at", "TIMESTAMP NOT NULL", "when, UTC"),
        Column(
            "as_of",
            "TIMESTAMP",
            "the observation date given to the ingest (end of that day, UTC); "
            "empty when none was given (live: the wall clock)",
        ),
    ),
    key=("source_file",),
    description="one row per file ingested, the latest ingest of it",
)

# Columns an orders file may carry beyond the stored ones: read by the ingest, not
# stored in ``orders`` (identity goes to ``customers``, status decides the table).
ORDER_INPUT = Table(
    "orders",
    (
        *ORDERS.columns,
        Column("refund_of", "VARCHAR", "on a refund row: the order_id it refunds"),
        Column("status", "VARCHAR", "paid, pending, refunded, cancelled... (blank: paid)"),
        Column("email", "VARCHAR", "the customer's e-mail address"),
        Column("name", "VARCHAR", "the customer's full name"),
    ),
    key=("order_id",),
    description="an orders file's row as the ingest reads it",
)

EXCLUDED_ORDERS = Table(
    "excluded_orders",
    (
        *ORDERS.columns,
        Column("status", "VARCHAR NOT NULL", "refunded, cancelled, pending or failed"),
        Column("reason", "VARCHAR NOT NULL", "why the order is not a purchase"),
    ),
    key=("order_id",),
    description=(
        "orders that are not purchases (fully refunded, cancelled, voided, failed, or "
        "pending payment): kept out of ``orders`` so that no metric counts them"
    ),
    enforce_key=False,
)

ORDER_REFUNDS = Table(
    "order_refunds",
    (
        Column("order_id", "VARCHAR NOT NULL", "the order refunded"),
        Column("customer_id", "VARCHAR", "who was refunded"),
        Column("refunded_at", "TIMESTAMP NOT NULL", "when, UTC"),
        Column("amount", "DOUBLE NOT NULL", "money refunded, reporting currency, positive"),
        Column("currency", "VARCHAR", "currency the refund was made in"),
        Column("source_file", "VARCHAR NOT NULL", "file (or API call) of the refund row"),
        Column("row_number", "BIGINT NOT NULL", "its row there"),
    ),
    description="refund rows, each already subtracted from its order's net revenue",
)

LISTED_CUSTOMERS = Table(
    "listed_customers",
    (
        Column("customer_id", "VARCHAR NOT NULL", "a customer given by a customers file", True),
        Column("source_file", "VARCHAR", "that file (empty: listed before files were recorded)"),
    ),
    key=("customer_id",),
    description=(
        "customers a customers file gave: they stay when they have no order, while a "
        "customer made from orders goes when their last order moves to another customer"
    ),
)

# Not a canonical table of the orders: written by retain.backtest (a store migration
# creates it), one row per `retain backtest` run.
BACKTESTS = Table(
    "backtests",
    (
        Column("backtest_id", "INTEGER NOT NULL", "the run, numbered from 1"),
        Column("created_at", "TIMESTAMP NOT NULL", "when it ran, UTC"),
        Column("as_of", "DATE NOT NULL", "the store's observation day it ran at"),
        Column("result", "JSON NOT NULL", "the whole result (retain.backtest.Backtest.to_dict)"),
    ),
    key=("backtest_id",),
    description="one row per backtest run: every model's scores at every origin and horizon",
)

# Not canonical tables of the orders: written by retain.campaigns (a store migration
# creates them).
CAMPAIGN_OUTBOX = Table(
    "campaign_outbox",
    (
        Column(
            "key", "VARCHAR NOT NULL", "campaign/customer/trigger occurrence: sent once at most"
        ),
        Column("campaign", "VARCHAR NOT NULL", "the campaign's name"),
        Column("customer_id", "VARCHAR NOT NULL", "who the message is for"),
        Column("trigger_key", "VARCHAR NOT NULL", "the trigger occurrence, e.g. order:1001"),
        Column("variant", "VARCHAR", "the template variant chosen"),
        Column("channel", "VARCHAR NOT NULL", "email, webhook or file"),
        Column("address", "VARCHAR", "where it goes: the e-mail address"),
        Column("transactional", "BOOLEAN NOT NULL", "skips caps and quiet hours, never opt-outs"),
        Column(
            "status",
            "VARCHAR NOT NULL",
            "queued, held, sending, sent, failed, suppressed, capped, control or unconfirmed",
        ),
        Column("reason", "VARCHAR", "why it was held, capped, suppressed or failed"),
        Column("created_at", "TIMESTAMP NOT NULL", "when the trigger was evaluated, UTC"),
        Column("not_before", "TIMESTAMP", "held or retried: not sent before this, UTC"),
        Column("attempts", "INTEGER NOT NULL", "delivery attempts so far"),
        Column("sent_at", "TIMESTAMP", "when the channel took it, UTC"),
        Column("delivery_id", "VARCHAR", "the channel's id: Message-ID, webhook key, file"),
        Column("subject", "VARCHAR", "the rendered subject"),
        Column("body_text", "VARCHAR", "the rendered text part"),
        Column("body_html", "VARCHAR", "the rendered HTML part"),
    ),
    key=("key",),
    description="one row per message a campaign decided on, written before it is sent",
)

CONTACT_SUPPRESSIONS = Table(
    "contact_suppressions",
    (
        Column("customer_id", "VARCHAR NOT NULL", "who is not to be contacted"),
        Column("scope", "VARCHAR NOT NULL", "marketing, transactional or all"),
        Column("reason", "VARCHAR NOT NULL", "unsubscribed, bounced, complained or do_not_contact"),
        Column("created_at", "TIMESTAMP NOT NULL", "when, UTC"),
        Column("source", "VARCHAR", "what recorded it: the unsubscribe link, a file, the CLI"),
    ),
    description="opt-outs, bounces and do-not-contact marks: read before every send",
)

LOYALTY_LEDGER = Table(
    "loyalty_ledger",
    (
        Column("entry_id", "VARCHAR NOT NULL", "the write's idempotency key: one entry per key"),
        Column("customer_id", "VARCHAR NOT NULL", "whose points"),
        Column(
            "kind",
            "VARCHAR NOT NULL",
            "earn, bonus, referral, adjust (credits); reverse, redeem, expire, adjust (debits)",
        ),
        Column("points", "BIGINT NOT NULL", "points added (above 0) or taken (below 0)"),
        Column("happened_at", "TIMESTAMP NOT NULL", "when it happened, UTC"),
        Column("available_at", "TIMESTAMP NOT NULL", "when it counts in the spendable balance"),
        Column("expires_at", "TIMESTAMP", "a credit's expiry (none: never)"),
        Column("lot", "VARCHAR", "the credit a reversal or an expiry takes from"),
        Column("order_id", "VARCHAR", "the order it comes from"),
        Column("reason", "VARCHAR", "why: a bonus's or an adjustment's reason"),
        Column("recorded_at", "TIMESTAMP NOT NULL", "when it was written, UTC"),
        Column("source", "VARCHAR NOT NULL", "build, api or cli"),
    ),
    key=("entry_id",),
    description="the points ledger: append-only, a balance is the sum of its entries",
)

LOYALTY_REFERRALS = Table(
    "loyalty_referrals",
    (
        Column("friend_id", "VARCHAR NOT NULL", "the customer referred"),
        Column("referrer_id", "VARCHAR NOT NULL", "the customer whose code it was"),
        Column("code", "VARCHAR NOT NULL", "the referral code the first order carried"),
        Column("order_id", "VARCHAR NOT NULL", "the friend's first order"),
        Column("ordered_at", "TIMESTAMP NOT NULL", "when, UTC"),
        Column("status", "VARCHAR NOT NULL", "rewarded, waiting or refused"),
        Column("reason", "VARCHAR", "why it waits or was refused"),
        Column("decided_at", "TIMESTAMP NOT NULL", "the ledger clock of the build that decided"),
    ),
    key=("friend_id",),
    description="each friend who came with a referral code, and what became of the reward",
)

TABLES: tuple[Table, ...] = (
    ORDERS,
    ORDER_LINES,
    CUSTOMERS,
    MARKETING_SPEND,
    QUARANTINE,
    INGESTED_FILES,
    EXCLUDED_ORDERS,
    ORDER_REFUNDS,
    LISTED_CUSTOMERS,
)

# Order statuses as written by shops and exports -> what the ingest does with them:
# "paid" is a purchase; "pending" is revenue only once paid (unless the ingest is
# told to count it); the others are not purchases.
ORDER_STATUSES: dict[str, str] = {
    **dict.fromkeys(
        (
            "paid",
            "complete",
            "completed",
            "processing",
            "fulfilled",
            "shipped",
            "delivered",
            "partially_refunded",
            "partially_paid",
            "ok",
        ),
        "paid",
    ),
    **dict.fromkeys(
        ("pending", "authorized", "unpaid", "on-hold", "on_hold", "awaiting_payment"), "pending"
    ),
    "refunded": "refunded",
    **dict.fromkeys(("cancelled", "canceled", "voided", "void", "trash"), "cancelled"),
    **dict.fromkeys(("failed", "declined", "expired"), "failed"),
}

MONEY_COLUMNS = ("gross", "discount", "shipping", "tax", "fees", "refunded")
