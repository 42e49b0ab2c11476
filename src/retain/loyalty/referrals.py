"""Referral codes and rewards.

Every customer has a code (``REF-`` and 12 characters of a keyed hash of their id: the
same at every build, unguessable without the store's secret). A friend is referred when
their first order carries a referrer's code as its ``discount_code``, or when a referral
was recorded for them (:func:`record_referral`: a sign-up link, say) before their first
order was past its return window. The referrer's
``reward`` (and the friend's ``friend_reward``) is written once the friend's order is past
the return window (``waiting`` until then), unless:

- the code is the friend's own, or the friend's e-mail address is the referrer's once
  normalised (lower case, no ``+tag``, no dots in a Gmail name), or their payment or
  address fingerprint (``customers.payment_fingerprint``, ``address_fingerprint``, when
  given) is the referrer's: refused, self-referral;
- the first order was refunded in full: refused;
- the referrer already had ``max_per_year`` friends rewarded in that calendar year (of
  the reward): refused, the cap reached. The friends of a year are taken in the order of
  their rewards, so the cap falls on the eleventh, whatever the build that sees it.

A later order with a code, or a code that is no one's, is no referral. Decisions are kept
in ``loyalty_referrals``; a refused or rewarded one is final, a waiting one is decided
again at each build.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from retain.loyalty.rules import LoyaltyRules


def _secret(con: Any) -> str:
    found = con.execute("SELECT value FROM campaign_secrets WHERE name = 'loyalty'").fetchall()
    if found:
        return str(found[0][0])
    value = secrets.token_hex(32)
    con.execute("INSERT INTO campaign_secrets VALUES ('loyalty', ?)", [value])
    return value


def member_codes(con: Any, rules: LoyaltyRules, now: dt.datetime) -> str:
    """The temp table ``_codes`` (customer_id, code) of every customer with an order by
    ``now``; its name. Two customers whose 12 characters coincide both get 16."""
    secret = _secret(con)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _codes AS
        WITH ids AS (
            SELECT DISTINCT customer_id FROM orders WHERE ordered_at <= $now
            UNION SELECT customer_id FROM excluded_orders
            WHERE status = 'refunded' AND ordered_at <= $now
        ),
        hashed AS (SELECT customer_id, upper(sha256($secret || customer_id)) AS h FROM ids),
        short AS (SELECT *, count(*) OVER (PARTITION BY left(h, 12)) AS same FROM hashed)
        SELECT customer_id,
               $prefix || '-' || CASE WHEN same > 1 THEN left(h, 16) ELSE left(h, 12) END AS code
        FROM short
        """,
        {"secret": secret, "prefix": rules.code_prefix, "now": now},
    )
    return "_codes"


NORMALISED_EMAIL = """
CASE WHEN {e} LIKE '%_@_%' THEN
    CASE WHEN split_part(lower(trim({e})), '@', 2) IN ('gmail.com', 'googlemail.com')
         THEN replace(regexp_replace(split_part(lower(trim({e})), '@', 1), '\\+.*$', ''), '.', '')
              || '@gmail.com'
         ELSE regexp_replace(split_part(lower(trim({e})), '@', 1), '\\+.*$', '')
              || '@' || split_part(lower(trim({e})), '@', 2) END
END
"""


def decide_referrals(con: Any, rules: LoyaltyRules, now: dt.datetime) -> dict[str, int]:
    """Decide the referrals not decided yet and write the rewards due; the counts of each
    status, and ``added`` (ledger entries written)."""
    friend_email = NORMALISED_EMAIL.format(e="cf.email")
    referrer_email = NORMALISED_EMAIL.format(e="cr.email")
    same_payment, same_address = (
        f"lower(trim(cf.{c})) <> '' AND lower(trim(cf.{c})) = lower(trim(cr.{c}))"
        for c in ("payment_fingerprint", "address_fingerprint")
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _candidates AS
        WITH firsts AS (
            SELECT customer_id, arg_min(order_id, (ordered_at, order_id)) AS order_id,
                   min(ordered_at) AS ordered_at,
                   arg_min_null(discount_code, (ordered_at, order_id)) AS discount_code,
                   arg_min(refunded_in_full, (ordered_at, order_id)) AS refunded_in_full
            FROM (
                SELECT customer_id, order_id, ordered_at, discount_code, false AS refunded_in_full
                FROM orders WHERE ordered_at <= $now
                UNION ALL
                SELECT customer_id, order_id, ordered_at, discount_code, true
                FROM excluded_orders WHERE status = 'refunded' AND ordered_at <= $now
            ) GROUP BY customer_id
        )
        SELECT f.customer_id AS friend_id, c.customer_id AS referrer_id, c.code, f.order_id,
               f.ordered_at, f.ordered_at + to_days(CAST($pending AS INTEGER)) AS due,
               CASE
                 WHEN c.customer_id = f.customer_id
                   THEN 'self-referral: the customer''s own code'
                 WHEN {friend_email} IS NOT NULL AND {friend_email} = {referrer_email}
                   THEN 'self-referral: the same e-mail address as the referrer'
                 WHEN {same_payment}
                   THEN 'self-referral: the same payment fingerprint as the referrer'
                 WHEN {same_address}
                   THEN 'self-referral: the same address fingerprint as the referrer'
                 WHEN f.refunded_in_full THEN 'the friend''s first order was refunded'
               END AS refused
        FROM firsts f
        LEFT JOIN _codes carried ON carried.code = upper(trim(f.discount_code))
        LEFT JOIN loyalty_referral_claims k ON k.friend_id = f.customer_id
            AND k.recorded_at <= f.ordered_at + to_days(CAST($pending AS INTEGER))
        -- the code the first order carried, else the one recorded for the friend
        JOIN _codes c ON c.code = coalesce(carried.code, k.code)
        LEFT JOIN customers cf ON cf.customer_id = f.customer_id
        LEFT JOIN customers cr ON cr.customer_id = c.customer_id
        WHERE f.customer_id NOT IN (
            SELECT friend_id FROM loyalty_referrals WHERE status <> 'waiting')
        """,
        {"now": now, "pending": rules.pending_days},
    )
    # the eligible ones past the window, in the order of their rewards, within what is
    # left of each referrer's cap for the year
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _decided AS
        WITH used AS (
            SELECT referrer_id, year(ordered_at + to_days(CAST($pending AS INTEGER))) AS year,
                   count(*) AS n
            FROM loyalty_referrals WHERE status = 'rewarded' GROUP BY ALL
        ),
        ranked AS (
            SELECT c.*, year(c.due) AS year,
                   row_number() OVER (PARTITION BY c.referrer_id, year(c.due)
                                      ORDER BY c.due, c.friend_id) AS rank
            FROM _candidates c WHERE c.refused IS NULL AND c.due <= $now
        )
        SELECT c.friend_id, c.referrer_id, c.code, c.order_id, c.ordered_at, c.due,
               CASE WHEN c.refused IS NOT NULL THEN 'refused'
                    WHEN c.due > $now THEN 'waiting'
                    WHEN r.rank + coalesce(u.n, 0) > $cap THEN 'refused'
                    ELSE 'rewarded' END AS status,
               CASE WHEN c.refused IS NOT NULL THEN c.refused
                    WHEN c.due > $now THEN 'until the first order is past its return window, '
                                           || strftime(c.due, '%Y-%m-%d')
                    WHEN r.rank + coalesce(u.n, 0) > $cap
                      THEN 'the referrer''s cap of ' || $cap || ' rewarded friends in '
                           || r.year || ' is reached'
               END AS reason
        FROM _candidates c
        LEFT JOIN ranked r USING (friend_id)
        LEFT JOIN used u ON u.referrer_id = c.referrer_id AND u.year = r.year
        """,
        {"now": now, "pending": rules.pending_days, "cap": rules.max_per_year},
    )
    con.execute("DELETE FROM loyalty_referrals WHERE friend_id IN (SELECT friend_id FROM _decided)")
    con.execute(
        "INSERT INTO loyalty_referrals SELECT friend_id, referrer_id, code, order_id, "
        "ordered_at, status, reason, $now FROM _decided",
        {"now": now},
    )
    added = 0
    for who, points, prefix in (
        ("referrer_id", rules.reward, "referral"),
        ("friend_id", rules.friend_reward, "referred"),
    ):
        if points <= 0:
            continue
        rows = con.execute(
            f"""
            INSERT INTO loyalty_ledger
            SELECT '{prefix}/' || friend_id, {who}, 'referral', CAST($points AS BIGINT), due, due,
                   CASE WHEN $expire > 0 THEN due + to_months(CAST($expire AS INTEGER)) END,
                   NULL, order_id, 'referral of ' || friend_id, now()::TIMESTAMP, 'build'
            FROM _decided d WHERE status = 'rewarded' AND NOT EXISTS (
                SELECT 1 FROM loyalty_ledger l WHERE l.entry_id = '{prefix}/' || d.friend_id)
            """,
            {"points": points, "expire": rules.expire_months},
        ).fetchall()
        added += int(rows[0][0]) if rows else 0
    counts = dict(
        con.execute("SELECT status, count(*) FROM loyalty_referrals GROUP BY 1").fetchall()
    )
    return {"added": added, **{str(k): int(v) for k, v in counts.items()}}


def referral_code(store: Any, code: str) -> dict[str, Any]:
    """Whose ``code`` is (any case, spaces ignored), and its friends with their status."""
    from retain.errors import DataError
    from retain.loyalty.build import current_rules

    current_rules(store, required=True)
    wanted = (code or "").strip().upper()
    found = store.con.execute(
        "SELECT customer_id FROM loyalty_members WHERE code = ?", [wanted]
    ).fetchall()
    if not found:
        raise DataError("no customer has this referral code", value=code)
    friends = [
        dict(zip(("friend_id", "order_id", "ordered_at", "status", "reason"), row, strict=True))
        for row in store.con.execute(
            "SELECT friend_id, order_id, CAST(ordered_at AS VARCHAR), status, reason "
            "FROM loyalty_referrals WHERE code = ? ORDER BY ordered_at, friend_id",
            [wanted],
        ).fetchall()
    ]
    return {"code": wanted, "customer_id": found[0][0], "friends": friends}


def record_referral(
    store: Any, code: str, friend_id: str, *, source: str = "api"
) -> dict[str, Any]:
    """Record that ``friend_id`` came with the referral ``code`` (the next build decides
    the reward, as for a code on the first order). Once per friend: the same record again
    changes nothing; a different code for a friend already recorded is refused."""
    from retain.errors import DataError
    from retain.ingest import customer_key
    from retain.loyalty.build import current_rules
    from retain.loyalty.ledger import KeyReused, clock

    rules = current_rules(store, required=True)
    wanted = (code or "").strip().upper()
    friend = customer_key(friend_id or "")
    if not friend:
        raise DataError("friend_id", value=friend_id, expected="the referred customer's id")
    owner = store.con.execute(
        "SELECT customer_id FROM loyalty_members WHERE code = ?", [wanted]
    ).fetchall()
    if not owner:
        raise DataError("no customer has this referral code", value=code)
    if owner[0][0] == friend:
        raise DataError("a customer cannot refer themselves", value=friend)
    first = store.con.execute(
        "SELECT min(ordered_at) FROM orders WHERE customer_id = ?", [friend]
    ).fetchall()[0][0]
    now = clock(store)
    if first is not None and first + dt.timedelta(days=rules.pending_days) <= now:
        raise DataError(
            f"customer {friend!r} has been a customer since {first:%Y-%m-%d}: a referral "
            "counts for a new customer",
            value=friend,
        )
    with store.transaction() as con:
        found = con.execute(
            "SELECT code FROM loyalty_referral_claims WHERE friend_id = ?", [friend]
        ).fetchall()
        if found and found[0][0] != wanted:
            raise KeyReused(
                f"customer {friend!r} was already recorded as referred with {found[0][0]}"
            )
        if not found:
            con.execute(
                "INSERT INTO loyalty_referral_claims VALUES (?, ?, ?, ?)",
                [friend, wanted, now, source],
            )
    return {"friend_id": friend, "code": wanted, "referrer_id": owner[0][0], "new": not found}
