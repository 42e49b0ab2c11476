"""The points ledger: append-only entries, balances as their sum, and the writes.

**Entries.** A credit (``earn``, ``bonus``, ``referral``, a positive ``adjust``) is a
*lot*: spendable from ``available_at`` (an order's points once its return window has
closed), expiring at ``expires_at``. A ``reverse`` takes points back from its lot in
proportion to a refund made within that window, and shares the lot's ``available_at``
(pending points reversed before they count). Debits (``redeem``, a negative ``adjust``)
are checked against the spendable balance when written, so it never goes below 0.

**Expiry, oldest first.** Debits and expiries take points from the front of the lots in
order of expiry (which is the order they became spendable): at a lot's expiry, what is
left of it expires. What is left is found without a loop over events (:data:`SWEEP_SQL`):
with ``C_i`` the lots' cumulative points in that order and ``D(t)`` the debits before
``t``, the points used by the moment lot ``i`` expires are ``D(e_i) + max(0, max_{j<i}
(C_j - D(e_j)))`` (the debits, plus what earlier expiries took beyond them), and lot ``i``
loses ``max(0, C_i - max(C_{i-1}, used))``. The same query gives what is left of every
lot at the ledger's clock (the liability and what expires when).

**The clock** is the store's (:func:`clock`): the end of the ``as_of`` day, the wall clock
for a live store, else the end of the last order's day. A write is dated by it, so a
ledger built over a past period reads as it stood then.

**Idempotency.** Every entry's ``entry_id`` is its write's key: an order's points are
``earn/ORDER``, a redemption ``redeem/KEY``. The same request twice finds its entry and
changes nothing; the same key for a different request is refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from retain.errors import DataError, RetainError
from retain.store import Store

CREDITS = ("earn", "bonus", "referral", "adjust")
DEBITS = ("redeem", "adjust")
WRITTEN_BY_HAND = ("redeem", "adjust", "bonus")
"""The kinds a request writes (CLI, API): one idempotency key for all of them."""
MAX_POINTS = 10**12
"""The most points one write may move."""

# For the customers of $who (a table or a query of customer ids; all when NULL): every
# lot with what it lost to expiry by the clock ($now) and what is left of it then.
SWEEP_SQL = """
WITH e AS (
    SELECT * FROM loyalty_ledger
    WHERE {who} AND happened_at <= $now
),
lots AS (
    SELECT c.customer_id, c.entry_id AS lot, c.available_at, c.expires_at,
           c.points + coalesce(r.points, 0) AS net
    FROM e c LEFT JOIN (
        SELECT lot, sum(points) AS points FROM e WHERE kind = 'reverse' GROUP BY lot
    ) r ON r.lot = c.entry_id
    WHERE c.kind IN ('earn', 'bonus', 'referral', 'adjust') AND c.points > 0
),
ordered AS (
    SELECT *, sum(net) OVER (
        PARTITION BY customer_id ORDER BY expires_at NULLS LAST, available_at, lot
        ROWS UNBOUNDED PRECEDING) AS c_cum
    FROM lots
),
timeline AS (
    SELECT customer_id, expires_at AS t, 0 AS k, available_at, lot, c_cum, net, 0 AS amount
    FROM ordered WHERE expires_at <= $now
    UNION ALL
    SELECT customer_id, happened_at, 1, happened_at, NULL, NULL, NULL, -points
    FROM e WHERE kind IN ('redeem', 'adjust') AND points < 0
),
swept AS (
    SELECT *,
           sum(amount) OVER (PARTITION BY customer_id ORDER BY t, k, available_at, lot
                             ROWS UNBOUNDED PRECEDING) AS d
    FROM timeline
),
marked AS (
    SELECT *,
           max(c_cum - d) OVER (PARTITION BY customer_id ORDER BY t, k, available_at, lot
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ahead
    FROM swept
),
expired AS (
    SELECT customer_id, lot,
           greatest(0, c_cum - greatest(c_cum - net, d + greatest(0, coalesce(ahead, 0))))
               AS expired
    FROM marked WHERE k = 0
),
used AS (  -- the points taken from the front by the clock: debits and expiries
    SELECT customer_id,
           coalesce(sum(amount), 0) + greatest(0, coalesce(max(c_cum - d), 0)) AS used
    FROM swept GROUP BY customer_id
)
SELECT o.customer_id, o.lot, o.available_at, o.expires_at, o.net,
       coalesce(x.expired, 0) AS expired,
       CASE WHEN o.expires_at <= $now THEN 0
            ELSE greatest(0, least(o.net, o.c_cum - greatest(o.c_cum - o.net,
                                                             coalesce(u.used, 0)))) END
           AS remaining
FROM ordered o LEFT JOIN expired x USING (customer_id, lot)
LEFT JOIN used u USING (customer_id)
"""


def clock(store: Store) -> dt.datetime:
    """The ledger's clock (see the module): naive UTC."""
    from retain import config

    moment = config.observation_time(store)
    if moment is None:
        day = config.observation_day(store)
        moment = dt.datetime.combine(day, dt.time.max)
    return moment


def swept(
    con: duckdb.DuckDBPyConnection,
    now: dt.datetime,
    customers: list[str] | None,
    select: str,
    params: dict[str, Any] | None = None,
) -> list[tuple[Any, ...]]:
    """The rows of ``select``, a query over ``{s}`` (the rows of :data:`SWEEP_SQL` for
    ``customers``, None: everyone, at ``now``), with ``params``."""
    return con.execute(*_sweep(now, customers, select, params)).fetchall()


def _sweep(
    now: dt.datetime,
    customers: list[str] | None,
    select: str,
    params: dict[str, Any] | None,
    part: tuple[int, int] | None = None,
) -> tuple[str, dict[str, Any]]:
    """``select`` over the sweep of ``customers`` (None: everyone, or with ``part`` =
    (k, n), the k-th of n parts of everyone, by a hash of their ids)."""
    values: dict[str, Any] = {"now": now, **(params or {})}
    if customers is None and part is not None:
        who, values["part"], values["parts"] = "hash(customer_id) % $parts = $part", *part
    elif customers is None:
        who = "true"
    elif len(customers) == 1:  # an equality: read by the zone maps, not a join
        who, values["who"] = "customer_id = $who", customers[0]
    else:
        who, values["who"] = "customer_id IN (SELECT unnest($who))", customers
    return select.replace("{s}", f"({SWEEP_SQL.format(who=who)}) s"), values


UNWRITTEN = (
    "CASE WHEN s.expired > 0 AND NOT EXISTS (SELECT 1 FROM loyalty_ledger l "
    "WHERE l.entry_id = 'expire/' || s.lot) THEN s.expired ELSE 0 END"
)
"""Over a row ``s`` of :data:`SWEEP_SQL`: the points of its expiry when it is due but not
in the ledger yet (to write, or to take off the ledger's sum)."""

EXPIRE_SQL = f"""
INSERT INTO loyalty_ledger
SELECT 'expire/' || s.lot, s.customer_id, 'expire', -CAST(s.expired AS BIGINT), s.expires_at,
       s.expires_at, NULL, s.lot, NULL, NULL, now()::TIMESTAMP, 'build'
FROM {{s}} WHERE {UNWRITTEN} > 0
"""


def expire_due(
    con: duckdb.DuckDBPyConnection, now: dt.datetime, customers: list[str] | None
) -> int:
    """Write the expiries due by ``now`` that are not in the ledger yet; how many."""
    rows = swept(con, now, customers, EXPIRE_SQL)
    return int(rows[0][0]) if rows else 0


@dataclass
class Balance:
    """A customer's points at the clock: ``balance`` spendable, ``pending`` (in a return
    window), the lots still open, and the entries."""

    customer_id: str
    at: str
    balance: int
    pending: int
    value: float
    expiring: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    tier: dict[str, Any] | None = None
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "at": self.at,
            "balance": self.balance,
            "pending": self.pending,
            "value": self.value,
            "tier": self.tier,
            "referral_code": self.code,
            "expiring": self.expiring,
            "entries": self.entries,
        }


def _points(con: duckdb.DuckDBPyConnection, customer_id: str, now: dt.datetime) -> tuple[int, int]:
    """(spendable, pending) at ``now``: the ledger's sum, its due expiries written
    (:func:`expire_due`)."""
    row = con.execute(
        "SELECT coalesce(sum(points) FILTER (WHERE available_at <= $now), 0), "
        "coalesce(sum(points) FILTER (WHERE available_at > $now), 0) "
        "FROM loyalty_ledger WHERE customer_id = $c AND happened_at <= $now",
        {"c": customer_id, "now": now},
    ).fetchall()[0]
    return int(row[0]), int(row[1])


LOTS_SQL = f"""
SELECT s.lot, s.expires_at, s.available_at <= $now AS spendable, s.remaining,
       {UNWRITTEN} AS unwritten
FROM {{s}}
"""


def balance(
    store: Store,
    customer_id: str,
    *,
    history: int = 50,
    now: dt.datetime | None = None,
    rules: Any = None,
    members: Callable[[str], tuple[str, str | None] | None] | None = None,
) -> Balance:
    """A customer's balance (spendable and pending points at the clock, and their money
    value), their tier and referral code, the points that expire next, and their latest
    ``history`` entries (newest first). ``now``, ``rules`` and ``members`` (a customer's
    code and tier): the clock, the rules and ``loyalty_members`` of the latest build,
    when the caller keeps them already (the service does)."""
    from retain.ingest import customer_key
    from retain.loyalty.build import current_rules

    customer_id = customer_key(customer_id)  # as the ingest stored it
    rules = rules or current_rules(store, required=True)
    now = now or clock(store)
    if members is None:
        found = store.con.execute(
            "SELECT code, tier FROM loyalty_members WHERE customer_id = ?", [customer_id]
        ).fetchall()
        known = found[0] if found else None
    else:
        known = members(customer_id)
    # the customer's entries, sorted here: an ORDER BY with LIMIT reads the whole table
    rows = store.con.execute(
        "SELECT entry_id, kind, points, happened_at, available_at, expires_at, reason, "
        "recorded_at, lot FROM loyalty_ledger WHERE customer_id = ?",
        [customer_id],
    ).fetchall()
    if not known and not rows:
        raise UnknownMember("no such customer in the loyalty ledger", value=customer_id)
    rows = sorted((r for r in rows if r[3] <= now), key=lambda r: (r[3], r[7]), reverse=True)
    lots = _lots(store.con, now, customer_id, rows)
    unwritten = sum(int(lot[4]) for lot in lots)
    spendable = sum(r[2] for r in rows if r[4] <= now) - unwritten
    pending = sum(r[2] for r in rows if r[4] > now)
    soon: dict[dt.datetime, int] = {}
    for _, expires, can_spend, remaining, _ in lots:
        if remaining > 0 and expires is not None and can_spend:
            soon[expires] = soon.get(expires, 0) + int(remaining)
    expiring = [{"expires_at": str(at), "points": soon[at]} for at in sorted(soon)[:EXPIRING_SHOWN]]
    names = ("entry_id", "kind", "points", "at", "available_at", "expires_at", "reason")
    entries = [
        dict(zip(names, (r[0], r[1], r[2], *(_text(v) for v in r[3:6]), r[6]), strict=True))
        for r in rows[:history]
    ]
    tier = None
    code = None
    if known:
        code, name = known
        level = rules.tier(name)
        if level is not None:
            tier = {"name": level.name, **level.benefits()}
    return Balance(
        customer_id=customer_id,
        at=now.isoformat(sep=" ", timespec="seconds"),
        balance=int(spendable),
        pending=int(pending),
        value=round(spendable * rules.value, 2),
        expiring=expiring,
        entries=entries,
        tier=tier,
        code=code,
    )


def _lots(
    con: duckdb.DuckDBPyConnection, now: dt.datetime, customer_id: str, rows: list[tuple]
) -> list[tuple]:
    """The customer's lots as :data:`LOTS_SQL` gives them. Without a debit and without an
    expiry due but unwritten, no lot has lost anything but its reversals: what is left of
    each is then read from the entries, without the sweep."""
    ids = {r[0] for r in rows}
    credits = [r for r in rows if r[1] in CREDITS and r[2] > 0]
    reversed_: dict[str, int] = {}
    for r in rows:
        if r[1] == "reverse":
            reversed_[r[8]] = reversed_.get(r[8], 0) + r[2]
    debits = any(r[1] in DEBITS and r[2] < 0 for r in rows)
    due = any(
        r[5] is not None
        and r[5] <= now
        and r[2] + reversed_.get(r[0], 0) > 0
        and f"expire/{r[0]}" not in ids
        for r in credits
    )
    if debits or due:
        return list(swept(con, now, [customer_id], LOTS_SQL))
    out = []
    for r in credits:
        net = r[2] + reversed_.get(r[0], 0)
        open_ = r[5] is None or r[5] > now
        out.append((r[0], r[5], r[4] <= now, net if open_ else 0, 0))
    return out


# Every member's points at the clock ($now), a row a member in the order of their ids: the
# sums of the entries dated by then (as :func:`balance` adds them), and the first moment
# after the clock at which an entry is dated or pending points become spendable
MEMBER_POINTS_SQL = """
SELECT m.customer_id, m.code, m.tier, CAST(coalesce(s.spendable, 0) AS BIGINT) AS spendable,
       CAST(coalesce(s.pending, 0) AS BIGINT) AS pending, epoch_us(s.changes) AS changes
FROM loyalty_members m
LEFT JOIN (
    SELECT customer_id,
           sum(points) FILTER (WHERE happened_at <= $now AND available_at <= $now) AS spendable,
           sum(points) FILTER (WHERE happened_at <= $now AND available_at > $now) AS pending,
           least(min(happened_at) FILTER (WHERE happened_at > $now),
                 min(available_at) FILTER (WHERE happened_at <= $now AND available_at > $now))
               AS changes
    FROM loyalty_ledger GROUP BY customer_id
) s USING (customer_id)
ORDER BY m.customer_id
"""

# Every member's lots with points left or an expiry due and unwritten (rows of SWEEP_SQL),
# by the member's place in MEMBER_POINTS_SQL
MEMBER_LOTS_SQL = f"""
SELECT m.at, epoch_us(s.expires_at) AS expires_at, s.available_at <= $now AS spendable,
       CAST(s.remaining AS BIGINT) AS remaining, CAST({UNWRITTEN} AS BIGINT) AS unwritten
FROM {{s}}
JOIN (SELECT customer_id, row_number() OVER (ORDER BY customer_id) - 1 AS at
      FROM loyalty_members) m USING (customer_id)
WHERE s.remaining > 0 OR {UNWRITTEN} > 0
"""

EPOCH = dt.datetime(1970, 1, 1)
NEVER = np.iinfo(np.int64).max
EXPIRING_SHOWN = 5
"""How many of the next expiry dates a balance lists."""
SWEEP_PART = 2_000_000
"""About how many entries :func:`balances` sweeps at a time."""


@dataclass
class Balances:
    """Every member's referral code, tier and points at one moment (``at``), in memory:
    what a balance lookup without entries reads (:func:`balances`). A member's figures
    hold until ``changes[i]`` (microseconds since the epoch), when an entry is dated,
    pending points become spendable or a lot expires."""

    at: dt.datetime
    position: dict[str, int]
    code: list[str]
    tier: list[str | None]
    spendable: np.ndarray
    pending: np.ndarray
    changes: np.ndarray
    starts: np.ndarray
    """Where each member's next expiries begin in ``expires_at`` and ``expiring``."""
    expires_at: np.ndarray
    expiring: np.ndarray

    def member(self, customer_id: str) -> tuple[str, str | None] | None:
        """The member's (code, tier), or None."""
        at = self.position.get(customer_id)
        return None if at is None else (self.code[at], self.tier[at])

    def answer(self, customer_id: str, now: dt.datetime, rules: Any) -> dict[str, Any] | None:
        """:func:`balance` without entries, as its dict, for a member at ``now``; None when
        these figures cannot tell (not a member, or ``now`` outside what they hold)."""
        at = self.position.get(customer_id)
        if at is None or now < self.at or _micros(now) >= self.changes[at]:
            return None
        spendable = int(self.spendable[at])
        start, stop = int(self.starts[at]), int(self.starts[at + 1])
        stop = min(stop, start + EXPIRING_SHOWN)
        expiring = [
            {"expires_at": str(EPOCH + dt.timedelta(microseconds=t)), "points": p}
            for t, p in zip(
                self.expires_at[start:stop].tolist(),
                self.expiring[start:stop].tolist(),
                strict=True,
            )
        ]
        level = rules.tier(self.tier[at])
        return Balance(
            customer_id=customer_id,
            at=now.isoformat(sep=" ", timespec="seconds"),
            balance=spendable,
            pending=int(self.pending[at]),
            value=round(spendable * rules.value, 2),
            expiring=expiring,
            tier=None if level is None else {"name": level.name, **level.benefits()},
            code=self.code[at],
        ).to_dict()


def _micros(moment: dt.datetime) -> int:
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def balances(con: duckdb.DuckDBPyConnection, now: dt.datetime) -> Balances:
    """Every member's code, tier and points at ``now`` (:class:`Balances`), as
    :func:`balance` finds them one at a time: a pass over the ledger and the sweep of
    every lot."""
    members = con.execute(MEMBER_POINTS_SQL, {"now": now}).fetchnumpy()
    ids = [str(v) for v in members["customer_id"].tolist()]
    n = len(ids)
    # the sweep in parts of about SWEEP_PART entries: over a ledger of 5M entries at once
    # its window functions held 1.8 GB, in thirds 0.8 GB (each part reads the whole ledger)
    entries = int(con.execute("SELECT count(*) FROM loyalty_ledger").fetchall()[0][0])
    parts = max(1, -(-entries // SWEEP_PART))
    columns: dict[str, list[np.ndarray]] = {}
    for k in range(parts):
        sql, values = _sweep(now, None, MEMBER_LOTS_SQL, None, (k, parts))
        for name, column in con.execute(sql, values).fetchnumpy().items():
            columns.setdefault(name, []).append(np.ma.filled(column, NEVER))
    lots = {name: np.concatenate(chunks) for name, chunks in columns.items()}
    at = lots["at"].astype(np.int64)
    expires = lots["expires_at"].astype(np.int64)
    order = np.lexsort((expires, at))
    at, expires = at[order], expires[order]
    remaining = lots["remaining"].astype(np.int64)[order]
    unwritten = np.zeros(n, dtype=np.int64)
    np.add.at(unwritten, at, lots["unwritten"].astype(np.int64)[order])
    changes = np.ma.filled(members["changes"], NEVER).astype(np.int64)
    open_ = remaining > 0
    np.minimum.at(changes, at[open_], expires[open_])  # what is left of a lot expires
    # the points to spend that expire, summed by member and date
    shown = open_ & lots["spendable"].astype(bool)[order] & (expires != NEVER)
    at, expires, remaining = at[shown], expires[shown], remaining[shown]
    first = np.ones(len(at), dtype=bool)
    first[1:] = (at[1:] != at[:-1]) | (expires[1:] != expires[:-1])
    groups = np.flatnonzero(first)
    return Balances(
        at=now,
        position={customer: i for i, customer in enumerate(ids)},
        code=[str(v) for v in members["code"].tolist()],
        tier=[None if v is None else str(v) for v in np.ma.filled(members["tier"], None).tolist()],
        spendable=np.asarray(members["spendable"], dtype=np.int64) - unwritten,
        pending=np.asarray(members["pending"], dtype=np.int64),
        changes=changes,
        starts=np.searchsorted(at[groups], np.arange(n + 1)),
        expires_at=expires[groups],
        expiring=np.add.reduceat(remaining, groups) if len(groups) else remaining[:0],
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class UnknownMember(DataError):
    """No such customer in the ledger or among the members (a lookup answers 404)."""


class NotEnoughPoints(RetainError):
    """A redemption (or a negative adjustment) above the spendable balance (HTTP 409)."""


class KeyReused(RetainError):
    """An idempotency key already used for a different request (HTTP 409)."""


def _check_key(key: str) -> str:
    key = (key or "").strip()
    if not key or len(key) > 200 or any(ord(c) < 32 for c in key):
        raise DataError(
            "idempotency key",
            value=key,
            expected="1 to 200 printable characters, unique per request",
        )
    return key


def _replay(
    con: duckdb.DuckDBPyConnection, key: str, entry_id: str, customer_id: str, points: int
) -> dict[str, Any] | None:
    """The entry an earlier request with ``key`` wrote (of any kind written by hand), when
    it is this request again; :class:`KeyReused` when it was another."""
    found = con.execute(
        "SELECT entry_id, customer_id, points, CAST(happened_at AS VARCHAR) FROM loyalty_ledger "
        "WHERE entry_id IN (SELECT unnest($ids))",
        {"ids": [f"{kind}/{key}" for kind in WRITTEN_BY_HAND]},
    ).fetchall()
    if not found:
        return None
    stored_id, who, stored, at = found[0]
    if stored_id != entry_id or who != customer_id or stored != points:
        raise KeyReused(
            f"the idempotency key {key!r} was used for another request ({stored_id.split('/')[0]} "
            f"of {stored:+,} points for customer {who!r}): give a new key for a new request"
        )
    return {"entry_id": entry_id, "points": stored, "at": at, "replayed": True}


def write_entry(
    store: Store,
    customer_id: str,
    points: int,
    *,
    kind: str,
    key: str,
    reason: str | None = None,
    source: str = "api",
) -> dict[str, Any]:
    """Append one entry by hand: a redemption (``points`` below 0), an adjustment (either
    sign, with a reason) or a bonus. Checked in one transaction: a debit against the
    spendable balance at the clock (:class:`NotEnoughPoints`), the key against the
    ledger (the same request again returns its entry, ``replayed``; another request
    under the same key is :class:`KeyReused`). The due expiries of the customer are
    written first, so that the balance after is the ledger's sum."""
    from retain.ingest import customer_key
    from retain.loyalty.build import check_clock, current_rules

    rules = current_rules(store, required=True)
    key = _check_key(key)
    customer_id = customer_key(customer_id)
    if (
        isinstance(points, bool)
        or not isinstance(points, int)
        or points == 0
        or abs(points) > MAX_POINTS
    ):
        raise DataError(
            "points", value=points, expected=f"a whole number, not 0, at most {MAX_POINTS:,}"
        )
    if kind == "redeem" and points > 0:
        raise DataError("points to redeem", value=-points, expected="a number above 0")
    if kind == "adjust" and not (reason or "").strip():
        raise DataError("an adjustment needs a reason", expected="--reason TEXT")
    entry_id = f"{kind}/{key}"
    now = clock(store)
    check_clock(store, now)
    with store.transaction() as con:
        replayed = _replay(con, key, entry_id, customer_id, points)
        if replayed is not None:
            expire_due(con, now, [customer_id])
            replayed["balance"] = _points(con, customer_id, now)[0]
            return replayed
        known = con.execute(
            "SELECT 1 FROM loyalty_members WHERE customer_id = ? UNION ALL "
            "SELECT 1 FROM loyalty_ledger WHERE customer_id = ? LIMIT 1",
            [customer_id, customer_id],
        ).fetchall()
        if not known:
            raise UnknownMember("no such customer in the loyalty ledger", value=customer_id)
        later = con.execute(
            "SELECT max(happened_at) FROM loyalty_ledger WHERE customer_id = ?", [customer_id]
        ).fetchall()[0][0]
        if later is not None and later > now:
            raise DataError(
                f"customer {customer_id!r} has ledger entries up to {later:%Y-%m-%d %H:%M}, "
                f"after the store's clock ({now:%Y-%m-%d %H:%M})",
                expected="the as_of setting on or after that day",
            )
        expire_due(con, now, [customer_id])
        spendable, pending = _points(con, customer_id, now)
        if points < 0 and spendable + points < 0:
            waiting = f" ({pending:,} more pending until their return windows close)"
            raise NotEnoughPoints(
                f"not enough points: customer {customer_id!r} has {spendable:,} to spend"
                f"{waiting if pending else ''}, {-points:,} asked"
            )
        expires = None
        if points > 0 and rules.expire_months:
            expires = con.execute(
                "SELECT CAST(? AS TIMESTAMP) + to_months(?)", [now, rules.expire_months]
            ).fetchall()[0][0]
        con.execute(
            "INSERT INTO loyalty_ledger VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, "
            "now()::TIMESTAMP, ?)",
            [entry_id, customer_id, kind, points, now, now, expires, reason, source],
        )
        after = _points(con, customer_id, now)[0]
        con.execute(
            "UPDATE loyalty_members SET balance = ? WHERE customer_id = ?", [after, customer_id]
        )
    return {
        "entry_id": entry_id,
        "points": points,
        "at": now.isoformat(sep=" ", timespec="seconds"),
        "replayed": False,
        "balance": after,
    }
