"""The DuckDB store: one file holding every table, with versioned migrations.

Open it with :class:`Store`; every write goes through :meth:`Store.transaction`
so that a failed ingest leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from retain.errors import StoreError, StoreLocked
from retain.schema import (
    BACKTESTS,
    CAMPAIGN_OUTBOX,
    CONTACT_SUPPRESSIONS,
    EVENTS,
    FEEDBACK,
    LOYALTY_LEDGER,
    LOYALTY_REFERRALS,
    SUBSCRIPTIONS,
    TABLES,
)

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_PATH = "retain.duckdb"

_DUPLICATE_REASON = (
    "'order_id ''' || order_id || ''' was stored twice; the later copy was kept when the "
    "store was upgraded to a unique order_id'"
)

# Each migration moves the store from version N-1 to N. Append, never edit: a
# store written by an older retain is brought up to date when it is opened.
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("canonical tables", [t.ddl() for t in TABLES]),
    (
        # retain.recommend: tables that Recommender.save writes and from_store reads
        "recommendation tables",
        [
            """CREATE TABLE IF NOT EXISTS recommend_items (
                item INTEGER NOT NULL, sku VARCHAR NOT NULL, name VARCHAR, category VARCHAR,
                unit_price DOUBLE, family INTEGER, baskets BIGINT, customers BIGINT,
                repeat_share DOUBLE, repurchase_days DOUBLE)""",
            """CREATE TABLE IF NOT EXISTS item_associations (
                kind VARCHAR NOT NULL, item INTEGER NOT NULL, rank INTEGER NOT NULL,
                other INTEGER NOT NULL, score DOUBLE, confidence DOUBLE, lift DOUBLE,
                count BIGINT)""",
            """CREATE TABLE IF NOT EXISTS item_bundles (
                rank INTEGER NOT NULL, items INTEGER[] NOT NULL, count BIGINT,
                support DOUBLE, lift DOUBLE, total_price DOUBLE)""",
            """CREATE TABLE IF NOT EXISTS recommend_builds (
                built_at TIMESTAMP, baskets BIGINT, customers BIGINT, items INTEGER,
                order_lines BIGINT, last_order TIMESTAMP, options VARCHAR)""",
        ],
    ),
    (
        "recommendation items: repeat lift and product type",
        [
            "ALTER TABLE recommend_items ADD COLUMN IF NOT EXISTS repeat_lift DOUBLE",
            "ALTER TABLE recommend_items ADD COLUMN IF NOT EXISTS product_type VARCHAR",
        ],
    ),
    (
        "recommendation items: buyers who came back; returning customers per build",
        [
            "ALTER TABLE recommend_items ADD COLUMN IF NOT EXISTS returning_buyers BIGINT",
            "ALTER TABLE recommend_items ADD COLUMN IF NOT EXISTS later_buyers BIGINT",
            "ALTER TABLE recommend_builds ADD COLUMN IF NOT EXISTS returning_customers BIGINT",
        ],
    ),
    (
        # retain.scoring: every `retain fit`, with the data it was fitted on
        "model fits",
        [
            """CREATE TABLE IF NOT EXISTS model_fits (
                fit_id INTEGER PRIMARY KEY, model VARCHAR NOT NULL, params VARCHAR NOT NULL,
                spend_params VARCHAR, unit VARCHAR NOT NULL, grain VARCHAR NOT NULL,
                observation_end DATE NOT NULL, fitted_at TIMESTAMP NOT NULL,
                customers BIGINT NOT NULL, log_likelihood DOUBLE, converged BOOLEAN,
                holdout_weeks INTEGER, holdout_actual DOUBLE, holdout_predicted DOUBLE,
                holdout_mae DOUBLE, holdout_rmse DOUBLE, candidates VARCHAR)""",
        ],
    ),
    (
        # retain.guard: whether a fit passed the fit guard, its checks, why it was chosen
        "model fits: guard and choice",
        [
            "ALTER TABLE model_fits ADD COLUMN IF NOT EXISTS kept BOOLEAN",
            "ALTER TABLE model_fits ADD COLUMN IF NOT EXISTS guard VARCHAR",
            "ALTER TABLE model_fits ADD COLUMN IF NOT EXISTS choice VARCHAR",
        ],
    ),
    (
        # retain.ingest: orders that are not purchases, refund rows, each ingest's as_of
        "excluded orders, order refunds, observation date of each ingest",
        [
            *(t.ddl() for t in TABLES if t.name in ("excluded_orders", "order_refunds")),
            "ALTER TABLE ingested_files ADD COLUMN IF NOT EXISTS as_of TIMESTAMP",
        ],
    ),
    (
        # retain.config: the store's settings; the observation date of the latest file
        # ingest becomes the as_of setting, as an ingest sets it from now on
        "settings",
        [
            """CREATE TABLE IF NOT EXISTS settings (
                name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL, source VARCHAR NOT NULL,
                set_at TIMESTAMP NOT NULL)""",
            """INSERT INTO settings
               SELECT 'as_of', CAST(CAST(as_of AS DATE) AS VARCHAR), 'ingest', now()::TIMESTAMP
               FROM (SELECT as_of FROM ingested_files ORDER BY ingested_at DESC LIMIT 1)
               WHERE as_of IS NOT NULL""",
        ],
    ),
    (
        # retain.ingest: order_id unique by constraint. A store written before kept its
        # key in the ingest alone; an order_id stored twice keeps its later copy, and the
        # earlier one is set aside in the quarantine with the reason, not lost.
        "orders: one row per order_id; ingested_files: the options of each ingest; "
        "customers given by a customers file",
        [
            f"""INSERT INTO quarantine
               SELECT coalesce(source_file, 'store'), 0, 'orders', 'order_id',
                      {_DUPLICATE_REASON}, CAST(to_json(o) AS VARCHAR), now()::TIMESTAMP
               FROM orders o
               WHERE rowid NOT IN (SELECT max(rowid) FROM orders GROUP BY order_id)""",
            """DELETE FROM orders
               WHERE rowid NOT IN (SELECT max(rowid) FROM orders GROUP BY order_id)""",
            "ALTER TABLE ingested_files ADD COLUMN IF NOT EXISTS options VARCHAR",
            *(t.ddl() for t in TABLES if t.name == "listed_customers"),
            # customers a customers file gave: those with no order, or a field that only
            # a customers file fills (birthday, time zone, locale)
            """INSERT OR IGNORE INTO listed_customers
               SELECT customer_id, NULL FROM customers
               WHERE customer_id NOT IN (SELECT customer_id FROM orders)
                  OR birthday IS NOT NULL OR timezone IS NOT NULL OR locale IS NOT NULL""",
        ],
    ),
    # apart: DuckDB builds an index over the rows a transaction deleted too
    (
        "orders: a unique index on order_id",
        ["CREATE UNIQUE INDEX IF NOT EXISTS orders_order_id ON orders (order_id)"],
    ),
    (
        # retain.ingest: the same content with the same options is a no-op only while no
        # write came after it (a.csv, then b.csv moving an order, then a.csv again is not)
        "ingested_files: whether an ingest is the store's latest write",
        ["ALTER TABLE ingested_files ADD COLUMN IF NOT EXISTS latest BOOLEAN"],
    ),
    (
        # retain.ingest: order_id unique by the ingest, which every writer of orders goes
        # through (retain.ingest.purchases.write); inserting 3.2M orders took 3.2 s with the
        # index (insert and commit), 0.7 s without
        "orders: order_id unique by the ingest, without the index",
        ["DROP INDEX IF EXISTS orders_order_id"],
    ),
    (
        # retain.recommend: every customer's purchases as item codes, kept by `retain
        # recommend build` so that the service reads arrays at start instead of grouping
        # every order line (retain.recommend.personal.save_histories)
        "recommendation histories: each customer's purchases, coded",
        [
            """CREATE TABLE IF NOT EXISTS recommend_histories (
                owner INTEGER NOT NULL, item INTEGER NOT NULL, first_ts DOUBLE,
                last_ts DOUBLE, purchases INTEGER)""",
            """CREATE TABLE IF NOT EXISTS recommend_history_customers (
                owner INTEGER NOT NULL, customer_id VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS recommend_history_basis (
                as_of_s DOUBLE, source VARCHAR, items VARCHAR)""",
        ],
    ),
    # retain.backtest: every `retain backtest` run, its whole result as JSON
    ("backtests", [BACKTESTS.ddl()]),
    # retain.campaigns: the outbox (each message written before it is sent) and opt-outs
    (
        "campaign outbox and contact suppressions",
        [
            CAMPAIGN_OUTBOX.ddl(),
            CONTACT_SUPPRESSIONS.ddl(),
            "CREATE TABLE IF NOT EXISTS campaign_secrets (name VARCHAR PRIMARY KEY, value VARCHAR)",
        ],
    ),
    # retain.campaigns: each customer's segment as the latest run saw it, for the
    # segment_entered and segment_left triggers
    (
        "campaign segment history",
        [
            "CREATE TABLE IF NOT EXISTS campaign_segments ("
            " customer_id VARCHAR PRIMARY KEY, segment VARCHAR NOT NULL, since DATE NOT NULL)"
        ],
    ),
    # retain.campaigns: coupons, and the code an order used (which redeems one)
    (
        "coupons, and orders' discount codes",
        [
            "ALTER TABLE orders ADD COLUMN IF NOT EXISTS discount_code VARCHAR",
            "ALTER TABLE excluded_orders ADD COLUMN IF NOT EXISTS discount_code VARCHAR",
            """CREATE TABLE IF NOT EXISTS campaign_coupons (
                code VARCHAR PRIMARY KEY, campaign VARCHAR NOT NULL,
                customer_id VARCHAR NOT NULL, outbox_key VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL, expires_at TIMESTAMP NOT NULL,
                redeemed_at TIMESTAMP, order_id VARCHAR)""",
        ],
    ),
    # retain.campaigns and retain.experiments: each click on a tracked link
    (
        "campaign clicks",
        [
            """CREATE TABLE IF NOT EXISTS campaign_clicks (
                outbox_key VARCHAR NOT NULL, campaign VARCHAR NOT NULL,
                customer_id VARCHAR NOT NULL, url VARCHAR NOT NULL,
                clicked_at TIMESTAMP NOT NULL)""",
        ],
    ),
    # retain.loyalty: the points ledger, referrals, each customer's tier and code as the
    # latest build left them, tier changes (campaign triggers) and the builds' rules
    (
        "loyalty",
        [
            LOYALTY_LEDGER.ddl(),
            "CREATE INDEX IF NOT EXISTS loyalty_ledger_customer ON loyalty_ledger (customer_id)",
            LOYALTY_REFERRALS.ddl(),
            """CREATE TABLE IF NOT EXISTS loyalty_members (
                customer_id VARCHAR NOT NULL, code VARCHAR NOT NULL, tier VARCHAR,
                qualifies_for VARCHAR, qualified DOUBLE, balance BIGINT, tier_since TIMESTAMP)""",
            """CREATE TABLE IF NOT EXISTS loyalty_tier_changes (
                customer_id VARCHAR NOT NULL, from_tier VARCHAR, to_tier VARCHAR,
                changed_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS loyalty_referral_claims (
                friend_id VARCHAR PRIMARY KEY, code VARCHAR NOT NULL,
                recorded_at TIMESTAMP NOT NULL, source VARCHAR NOT NULL)""",
            "ALTER TABLE customers ADD COLUMN IF NOT EXISTS payment_fingerprint VARCHAR",
            "ALTER TABLE customers ADD COLUMN IF NOT EXISTS address_fingerprint VARCHAR",
            """CREATE TABLE IF NOT EXISTS loyalty_builds (
                built_at TIMESTAMP NOT NULL, clock TIMESTAMP NOT NULL, rules VARCHAR NOT NULL,
                source VARCHAR NOT NULL, added BIGINT NOT NULL, summary VARCHAR)""",
        ],
    ),
    # retain.subscriptions: subscriptions as a source (a canonical file, Stripe's export)
    ("subscriptions", [SUBSCRIPTIONS.ddl()]),
    # retain.feedback: survey answers, reviews and support tickets as a source
    ("feedback", [FEEDBACK.ddl()]),
    # retain.feedback: each text's language, topics and tone, and the store's own taxonomy
    (
        "feedback tags",
        [
            """CREATE TABLE IF NOT EXISTS feedback_tags (
                feedback_id VARCHAR PRIMARY KEY, language VARCHAR, topics VARCHAR[] NOT NULL,
                sentiment VARCHAR NOT NULL, sentiment_from VARCHAR NOT NULL,
                taxonomy VARCHAR NOT NULL, tagged_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS feedback_taxonomy (
                taxonomy VARCHAR NOT NULL, digest VARCHAR NOT NULL, source VARCHAR NOT NULL,
                set_at TIMESTAMP NOT NULL)""",
        ],
    ),
    # retain.feedback.routing: which complaint went to which team's webhook
    (
        "feedback routes",
        [
            """CREATE TABLE IF NOT EXISTS feedback_routed (
                feedback_id VARCHAR NOT NULL, route VARCHAR NOT NULL, status VARCHAR NOT NULL,
                error VARCHAR, routed_at TIMESTAMP NOT NULL, PRIMARY KEY (feedback_id, route))""",
        ],
    ),
    # retain.service.webhooks: Shopify's deliveries taken (a resend is known by its id) and
    # each Shopify order as last delivered, with the refunds known of it
    (
        "shopify webhooks",
        [
            """CREATE TABLE IF NOT EXISTS shopify_deliveries (
                webhook_id VARCHAR PRIMARY KEY, topic VARCHAR NOT NULL, shop VARCHAR,
                received_at TIMESTAMP NOT NULL, outcome VARCHAR NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS shopify_orders (
                shopify_id VARCHAR PRIMARY KEY, order_id VARCHAR NOT NULL,
                updated_at TIMESTAMP, order_json VARCHAR NOT NULL, refunds_json VARCHAR NOT NULL,
                received_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS shopify_customers (
                customer_id VARCHAR PRIMARY KEY, updated_at TIMESTAMP)""",
        ],
    ),
    # retain.service: every write request the service answered, who made it and the answer
    (
        "api audit",
        [
            """CREATE TABLE IF NOT EXISTS api_audit (
                requested_at TIMESTAMP NOT NULL, caller VARCHAR NOT NULL, method VARCHAR NOT NULL,
                route VARCHAR NOT NULL, status INTEGER NOT NULL)""",
        ],
    ),
    # retain.ingest.events: browse and cart events, and which visitor is which customer
    (
        "events",
        [
            EVENTS.ddl(),
            """CREATE TABLE IF NOT EXISTS identities (
                anonymous_id VARCHAR PRIMARY KEY, customer_id VARCHAR NOT NULL,
                linked_at TIMESTAMP NOT NULL)""",
        ],
    ),
]


class Store:
    """A retain store in a DuckDB file (``":memory:"`` for a throwaway one).

    >>> store = Store(":memory:")
    >>> store.schema_version == len(MIGRATIONS)
    True
    """

    def __init__(self, path: str | Path = DEFAULT_PATH, *, read_only: bool = False) -> None:
        self.path = str(path)
        if read_only and self.path != ":memory:" and not Path(self.path).exists():
            raise StoreError(
                f"no store at {self.path}: ingest some orders first (retain ingest FILE --db {self.path})"
            )
        try:
            self.con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            message = f"cannot open the store {self.path}: {exc}"
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"the store {self.path} is in use by another process (a running `retain "
                    "serve`?). DuckDB lets one process write a file at a time: stop that process, "
                    "or send single orders to the service's POST /api/orders (`retain ingest` "
                    f"hands a file to a running `retain serve` of this store). ({exc})"
                ) from exc
            raise StoreError(message) from exc
        self.con.execute("SET TimeZone = 'UTC'")
        # the CLI says its own progress; DuckDB's bar would be printed into its output
        self.con.execute("SET enable_progress_bar = false")
        # whether a transaction() block is open, so that a nested one joins it: DuckDB
        # aborts the open transaction when BEGIN is run inside it
        self.in_transaction = False
        self.migrated = not read_only  # a writable store holds every table of MIGRATIONS
        if not read_only:
            self._migrate()

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        if not self.has_table("schema_version"):
            return 0
        row = self.con.execute("SELECT max(version) FROM schema_version").fetchall()[0]
        return int(row[0]) if row and row[0] is not None else 0

    def has_table(self, name: str) -> bool:
        row = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()[0]
        return bool(row and row[0])

    def _migrate(self) -> None:
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
        )
        current = self.schema_version
        for version, (description, statements) in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            with self.transaction():
                for statement in statements:
                    self.con.execute(statement)
                self.con.execute(
                    "INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)",
                    [version, description],
                )

    # -- access --------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: commit when the block ends, roll back if it raises (a failed
        COMMIT rolls back too). Within another :meth:`transaction` (``in_transaction``)
        the block joins it: the outer one commits or rolls back everything."""
        if self.in_transaction:
            yield self.con
            return
        self.con.execute("BEGIN TRANSACTION")
        self.in_transaction = True
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
                self.con.execute("ROLLBACK")
            raise
        finally:
            self.in_transaction = False

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a read query and return its rows as a pandas DataFrame."""
        return self.con.execute(sql, params or []).df()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self.con.execute(sql, params or []).fetchall()[0]
        return row[0] if row else None

    def require_orders(self) -> None:
        """Raise a clear error when the store holds no orders yet."""
        if not self.scalar("SELECT count(*) FROM orders"):
            raise StoreError(
                f"the store {self.path} holds no orders yet: run `retain ingest FILE --db {self.path}`"
            )


def open_store(store: Store | str | Path | None = None, *, read_only: bool = False) -> Store:
    """Accept a Store or a path (default ``retain.duckdb``) and return a Store."""
    if isinstance(store, Store):
        return store
    return Store(store or DEFAULT_PATH, read_only=read_only)


def status(store: Store) -> dict[str, Any]:
    """What the store holds: counts, net revenue, date range, quarantine, files.

    Keys: ``customers``, ``orders``, ``order_lines``, ``net_revenue`` (reporting
    currency), ``first_order`` and ``last_order`` (ISO 8601, UTC, or None),
    ``quarantined_rows``, ``files_ingested``, ``marketing_spend_rows``, ``subscriptions``,
    ``feedback``.
    """
    row = store.con.execute(
        """
        SELECT
            (SELECT count(DISTINCT customer_id) FROM orders),
            (SELECT count(*) FROM orders),
            (SELECT count(*) FROM order_lines),
            -- exact: a DECIMAL sum neither drifts (0.1 + 0.2 is 0.3) nor overflows to inf;
            -- amounts beyond the max_amount setting are quarantined at ingest, and any
            -- stored before that (too large for DECIMAL) are added as they are
            (SELECT coalesce(sum(TRY_CAST(net_revenue AS DECIMAL(38, 6))), 0) FROM orders),
            (SELECT coalesce(sum(net_revenue) FILTER (
                WHERE TRY_CAST(net_revenue AS DECIMAL(38, 6)) IS NULL), 0) FROM orders),
            (SELECT min(ordered_at) FROM orders),
            (SELECT max(ordered_at) FROM orders),
            (SELECT count(*) FROM quarantine),
            (SELECT count(*) FROM ingested_files),
            (SELECT count(*) FROM marketing_spend)
        """
    ).fetchall()[0]
    assert row is not None
    return {
        "customers": int(row[0]),
        "orders": int(row[1]),
        "order_lines": int(row[2]),
        # cents rounded half up, as DuckDB rounds: 1.005 is 1.01 (a float would give 1.0)
        "net_revenue": round(
            float(Decimal(row[3]).quantize(Decimal("0.01"), ROUND_HALF_UP)) + float(row[4]), 2
        ),
        "first_order": row[5].isoformat() if row[5] else None,
        "last_order": row[6].isoformat() if row[6] else None,
        "quarantined_rows": int(row[7]),
        "files_ingested": int(row[8]),
        "marketing_spend_rows": int(row[9]),
        "subscriptions": int(store.scalar("SELECT count(*) FROM subscriptions"))
        if store.has_table("subscriptions")
        else 0,
        "feedback": int(store.scalar("SELECT count(*) FROM feedback"))
        if store.has_table("feedback")
        else 0,
    }


_SIZE_UNITS = {"bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _size_bytes(text: str) -> float:
    """A DuckDB size setting ("18.6 GiB", "2GB", "512.0 MiB") in bytes; inf when unknown."""
    found = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not found or found.group(2).lower() not in _SIZE_UNITS:
        return math.inf
    return float(found.group(1)) * _SIZE_UNITS[found.group(2).lower()]


def _shown(limit: str) -> str:
    """A limit as DuckDB shows it ("59.6 GiB", rounded down), set again so that DuckDB
    shows the same: half its last digit added, or each restore would lower it by one."""
    found = re.fullmatch(r"\s*(\d+)\.(\d)\s*([a-zA-Z]+)\s*", limit)
    return f"{found.group(1)}.{found.group(2)}5 {found.group(3)}" if found else limit


@contextlib.contextmanager
def memory_at_most(store: Store, limit: str) -> Iterator[None]:
    """Within the block, DuckDB's memory limit is at most ``limit`` (e.g. "2GB"; a lower
    one set on the store stays), so that big work spills to disk; restored after: DuckDB's default again, or a limit set
    by hand as DuckDB shows it (to 0.1 of its unit). A store in memory has no disk to
    spill to and keeps its limit."""
    shown = "SELECT current_setting('memory_limit')"
    before = str(store.scalar(shown))
    if store.path == ":memory:" or _size_bytes(before) <= _size_bytes(limit):
        yield
        return
    default = str(duckdb.connect().execute(shown).fetchall()[0][0])
    store.con.execute(f"SET memory_limit = '{limit}'")
    try:
        yield
    finally:
        store.con.execute(
            "RESET memory_limit" if before == default else f"SET memory_limit = '{_shown(before)}'"
        )


CACHE_ROOM_BYTES = 64 * 2**20
"""Working memory left to other queries while :func:`drop_cached_blocks` lowers the limit."""


def drop_cached_blocks(store: Store) -> None:
    """Let DuckDB drop the table blocks it keeps after its queries, up to its memory limit
    (by default most of the machine's memory): a query that needs them again reads them
    from the file, most likely from the system's file cache. DuckDB drops them when its
    limit is lowered, so the limit is lowered for a moment to what its queries hold now
    (their working memory, as ``duckdb_memory()`` counts it) and
    :data:`CACHE_ROOM_BYTES` more for those that run meanwhile, then restored (see
    :func:`memory_at_most`). When blocks in use keep it from reaching that, it changes
    nothing. A store in memory keeps its blocks: they are its data."""
    if store.path == ":memory:":
        return
    working = store.scalar(
        "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag <> 'BASE_TABLE'"
    )
    limit = f"{math.ceil((int(working) + CACHE_ROOM_BYTES) / 2**20)}MiB"
    with contextlib.suppress(duckdb.OutOfMemoryException), memory_at_most(store, limit):
        pass
