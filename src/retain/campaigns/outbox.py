"""Running campaigns: decide, write to the outbox, then deliver, never twice.

:func:`run_campaigns` is one tick, safe to run every minute:

1. **Reconcile** what a crashed run left ``sending``: a webhook is sent again with the
   same idempotency key (the receiver drops the second); a file is looked for; an e-mail
   is marked ``unconfirmed`` and not sent again (the SMTP window: at most the one message
   that was in flight when the run died may have gone out unrecorded).
2. **Decide**: each campaign's due firings (:func:`retain.campaigns.triggers.due`) whose
   key (campaign/customer/trigger) is not yet in the outbox become one outbox row each:
   ``control`` (held out for the experiment), ``suppressed`` (opted out, unsubscribed,
   bounced, do-not-contact, no address), ``capped`` (the customer's caps across campaigns
   or the campaign's own, counted over rolling windows; a capped message is skipped, not
   delayed), ``held`` (quiet hours in the customer's time zone: sent when they end) or
   ``queued``. The rows are written in one transaction before anything is sent.
3. **Deliver** what is queued or held and due: each message marked ``sending`` and
   committed, sent, then marked ``sent`` with the channel's id; an opt-out recorded since
   the decision stops it. A refused message is ``failed``; a channel that may take it later
   (a timeout, a busy server) gets it again on later runs, up to :data:`MAX_ATTEMPTS`.

Marketing messages obey every rule; transactional ones skip caps and quiet hours but not
an opt-out of their own kind (``scope`` transactional or all).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from retain.campaigns.definitions import CAP_WINDOWS, Campaign, CampaignFile, Variant
from retain.errors import ArgumentError, DataError
from retain.store import Store

STATUSES = (
    "sent",
    "held",
    "capped",
    "suppressed",
    "failed",
    "control",
    "queued",
    "unconfirmed",
    "waiting",
)
"""What a run reports, each a count of outbox rows (``queued``: left for a later run;
``waiting``: for the winner of a newsletter's test)."""
COUNTED = ("queued", "held", "sending", "sent", "unconfirmed", "waiting")
"""Outbox rows that count against a customer's caps: messages sent or on their way."""
MAX_ATTEMPTS = 5
RETRY_AFTER = dt.timedelta(minutes=5)
UNSUBSCRIBE_DAYS = 90
"""How long an unsubscribe link works."""


@dataclass
class RunResult:
    """What one tick did: counts by status, and (dry run) the messages it would send."""

    now: str
    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    by_campaign: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, campaign: str, status: str, count: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + count
        row = self.by_campaign.setdefault(campaign, dict.fromkeys(STATUSES, 0))
        row[status] = row.get(status, 0) + count

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "dry_run": self.dry_run,
            **self.counts,
            "campaigns": self.by_campaign,
            "reasons": self.reasons,
            "samples": self.samples,
            "notes": self.notes,
        }


def moment(now: str | dt.datetime | None, store: Store) -> dt.datetime:
    """``now`` as an aware time: a naive one is in the store's time zone; None: now."""
    from retain.config import load_settings

    zone = zoneinfo.ZoneInfo(load_settings(store).time_zone)
    if now is None:
        return dt.datetime.now(dt.UTC).astimezone(zone)
    if isinstance(now, str):
        try:
            now = dt.datetime.fromisoformat(now)
        except ValueError:
            raise ArgumentError(
                f"--now: got {now!r}, expected an ISO date-time such as 2025-12-31T12:00:00"
            ) from None
    return now.replace(tzinfo=zone) if now.tzinfo is None else now.astimezone(zone)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _share(*parts: str) -> float:
    """A number in [0, 1) fixed by the parts: the same customer always falls the same way."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_variant(campaign: Campaign, customer_id: str) -> Variant:
    """The customer's variant, by weight, the same on every run."""
    total = sum(v.weight for v in campaign.variants)
    point = _share(campaign.name, customer_id, "variant") * total
    for variant in campaign.variants:
        point -= variant.weight
        if point < 0:
            return variant
    return campaign.variants[-1]


def in_control(campaign: Campaign, customer_id: str) -> bool:
    """Whether the customer is in the campaign's control group (not sent, measured)."""
    return campaign.control_share > 0 and _share(campaign.name, customer_id, "control") < (
        campaign.control_share
    )


def in_global_control(share: float, customer_id: str) -> bool:
    """Whether the customer is in the store's global control group (setting
    ``global_control``): sent no marketing message at all, by any campaign."""
    return share > 0 and _share("global control", customer_id) < share


def in_test(campaign: Campaign, customer_id: str) -> bool:
    """Whether the customer gets a newsletter's test (``auto_winner``) rather than its
    winner."""
    test = campaign.auto_winner
    return test is None or _share(campaign.name, customer_id, "test") < test.test_share


# -- unsubscribe -------------------------------------------------------------------------------
def _secret(store: Store, *, create: bool) -> bytes | None:
    found = store.con.execute(
        "SELECT value FROM campaign_secrets WHERE name = 'unsubscribe'"
    ).fetchall()
    if found:
        return bytes.fromhex(found[0][0])
    if not create:
        return None
    value = secrets.token_hex(32)
    store.con.execute("INSERT INTO campaign_secrets VALUES ('unsubscribe', ?)", [value])
    return bytes.fromhex(value)


def unsubscribe_token(secret: bytes, customer_id: str, expires: dt.datetime) -> str:
    """A signed token naming the customer, good until ``expires`` (UTC)."""
    body = f"{customer_id}\x1f{int(expires.replace(tzinfo=dt.UTC).timestamp())}".encode()
    mac = hmac.new(secret, body, hashlib.sha256).hexdigest()[:32]
    return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + mac


def read_unsubscribe_token(store: Store, token: str, now: dt.datetime | None = None) -> str:
    """The customer a valid, unexpired token names; else :class:`DataError` saying why."""
    secret = _secret(store, create=False)
    try:
        encoded, mac = token.split(".", 1)
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        customer_id, expires = body.decode().split("\x1f")
        until = dt.datetime.fromtimestamp(int(expires), dt.UTC)
    except (ValueError, UnicodeDecodeError):
        raise DataError("not an unsubscribe link", expected="the link of a message") from None
    good = secret is not None and hmac.compare_digest(
        hmac.new(secret, body, hashlib.sha256).hexdigest()[:32], mac
    )
    if not good:
        raise DataError("this unsubscribe link was not signed by this store")
    if (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC) > until:
        raise DataError(
            "this unsubscribe link has expired",
            expected="the link of a message from the last 90 days, or reply to the sender",
        )
    return customer_id


def suppress(
    store: Store,
    customer_id: str,
    *,
    reason: str = "unsubscribed",
    scope: str = "marketing",
    source: str = "cli",
) -> bool:
    """Record that ``customer_id`` is not to be sent ``scope`` messages any more (at once:
    the next send checks it). False when it was already recorded."""
    if scope not in ("marketing", "transactional", "all"):
        raise ArgumentError(f"scope: got {scope!r}, expected marketing, transactional or all")
    reasons = ("unsubscribed", "bounced", "complained", "do_not_contact")
    if reason not in reasons:
        raise ArgumentError(f"reason: got {reason!r}, expected {', '.join(reasons)}")
    with store.transaction() as con:
        held = con.execute(
            "SELECT count(*) FROM contact_suppressions WHERE customer_id = ? AND scope = ?",
            [customer_id, scope],
        ).fetchall()[0][0]
        if held:
            return False
        con.execute(
            "INSERT INTO contact_suppressions VALUES (?, ?, ?, now()::TIMESTAMP, ?)",
            [customer_id, scope, reason, source],
        )
    return True


def _suppressed(store: Store) -> dict[str, set[str]]:
    """Customers suppressed, by the kind of message they refuse."""
    out: dict[str, set[str]] = {"marketing": set(), "transactional": set()}
    if not store.has_table("contact_suppressions"):  # a store older than campaigns, read-only
        return out
    rows = store.con.execute("SELECT customer_id, scope FROM contact_suppressions").fetchall()
    for cid, scope in rows:
        for kind in ("marketing", "transactional") if scope == "all" else (scope,):
            out[kind].add(cid)
    return out


def refusal(
    transactional: bool, customer_id: str, accepts: Any, suppressed: dict[str, set[str]]
) -> str | None:
    """Why the customer may not get this message (None: they may)."""
    if customer_id in suppressed["transactional" if transactional else "marketing"]:
        return "opted out" if not transactional else "opted out of transactional messages"
    if not transactional and accepts is False:
        return "does not accept marketing"
    return None


# -- the run -----------------------------------------------------------------------------------
def run_campaigns(
    store: Store,
    campaigns: CampaignFile,
    *,
    now: str | dt.datetime | None = None,
    channels: dict[str, Any] | None = None,
    dry_run: bool = False,
    only: str | None = None,
    channel: str | None = None,
    limit: int | None = None,
    samples: int = 3,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """One tick: reconcile, decide and deliver (see the module). ``channels`` maps a
    channel kind to a :class:`retain.campaigns.channels.Channel` (missing ones are made
    from the settings: :func:`channel_for`). ``dry_run`` decides and renders but writes
    and sends nothing. ``only``: one campaign. ``channel``: every campaign through this
    channel instead of its own (``file`` for an audit of what would go out). ``limit``:
    deliver at most this many messages in this run (0: decide and queue only); the
    rest wait, in order, for the next run."""
    from retain.campaigns.triggers import customer_fields, due, keep_segments, segment_history
    from retain.config import load_settings

    when = moment(now, store)
    result = RunResult(when.isoformat(timespec="seconds"), dry_run)
    chosen = [c for c in campaigns.campaigns if c.enabled and (only is None or c.name == only)]
    if channel is not None:
        chosen = [dataclasses.replace(c, channel=channel) for c in chosen]
    if only is not None and not chosen:
        campaigns.get(only)  # names the campaigns there are
    _check_topics(store, campaigns, chosen)
    opened = dict(channels or {})
    if not dry_run and limit != 0:  # every channel ready before anything is written
        for kind in {c.channel for c in chosen} - set(opened):
            opened[kind] = channel_for(kind, campaigns, store)
    if not dry_run:
        _reconcile(store, opened, result)
        _redeem(store)
    frame = customer_fields(store)
    if not store.has_table("customer_scores"):
        result.notes.append(
            "no model scores yet (retain fit, retain score): window triggers fire for no one"
        )
    suppressed = _suppressed(store)
    global_share = load_settings(store).global_control
    # what every decision reads, by customer; the whole row only for a message rendered
    positions = {str(cid): i for i, cid in enumerate(frame.index)}
    contacts = {
        str(cid): {"email": e, "accepts_marketing": a, "timezone": z}
        for cid, e, a, z in zip(
            frame.index,
            frame["email"].tolist(),
            frame["accepts_marketing"].tolist(),
            frame["timezone"].tolist(),
            strict=True,
        )
    }
    taken = _taken(store, [c.name for c in chosen])
    counts = _cap_counts(store, _utc(when))
    secret = None if dry_run else _secret(store, create=True)
    rows: list[dict[str, Any]] = []
    recommending: dict[str, Any] = {}  # the recommender, loaded for the first campaign asking
    previous = segment_history(store)
    if previous is None and any(c.trigger.kind.startswith("segment_") for c in chosen):
        result.notes.append(
            "segment history starts with this run: segment_entered and segment_left fire "
            "from the next change on"
        )
    for campaign in chosen:
        firings = due(store, frame, campaign, when.date(), when, previous)
        for cid, trigger_key in zip(firings["customer_id"], firings["trigger_key"], strict=True):
            key = f"{campaign.name}/{cid}/{trigger_key}"
            if key in taken:
                continue
            taken.add(key)
            row = _decide(
                campaign,
                campaigns,
                contacts[cid],
                cid,
                key,
                trigger_key,
                when,
                suppressed,
                counts,
                global_share,
            )
            if row["status"] != "queued" or dry_run:  # a queued one is counted as delivered
                result.add(campaign.name, row["status"])
            if row["reason"] and row["status"] != "control":
                result.reasons[row["reason"]] = result.reasons.get(row["reason"], 0) + 1
            rows.append(row)
        sending = [
            r for r in rows if r["campaign"] == campaign.name and r["status"] in ("queued", "held")
        ]
        _render(store, campaign, campaigns, sending, frame, positions, secret, when, recommending)
    if not dry_run:
        tests = [c for c in chosen if c.auto_winner]
        released = _release(store, campaigns, tests, contacts, when, result)
        for campaign, picked in released:
            _render(
                store, campaign, campaigns, picked, frame, positions, secret, when, recommending
            )
            _write_released(store, picked)
    if dry_run:
        for row in rows:
            if row["status"] == "queued" and len(result.samples) < samples:
                sample = {
                    k: row[k] for k in ("key", "customer_id", "address", "subject", "body_text")
                }
                result.samples.append(sample)
        result.counts["would_send"] = result.counts.pop("queued", 0)
        return result
    _write(store, rows)
    keep_segments(store, frame, when.date())
    if progress:
        progress(f"{len(rows):,} new outbox rows; delivering")
    # only what this run's campaigns queued, through their channel: an audit run
    # (--channel file) sends nothing an earlier run queued for e-mail
    _deliver(store, campaigns, opened, when, result, limit, chosen)
    return result


def _render(
    store: Store,
    campaign: Campaign,
    campaigns: CampaignFile,
    rows: list[dict[str, Any]],
    frame: pd.DataFrame,
    positions: dict[str, int],
    secret: bytes | None,
    when: dt.datetime,
    recommending: dict[str, Any],
) -> None:
    """Render the messages of ``rows`` (each with its variant) in place, from the
    customers' rows taken out together: subject and bodies, a coupon for a variant that
    shows one, each link tracked (``click_url``)."""
    from retain.campaigns.clicks import track_links
    from retain.campaigns.triggers import feedback_context

    people = customer_rows(frame, [positions[r["customer_id"]] for r in rows])
    discounts = {
        row["key"]: customer.get("tier_discount")
        for row, customer in zip(rows, people, strict=True)
    }
    offers = _recommendations(store, campaign, rows, recommending, discounts)
    said = feedback_context(store, {r["key"]: r["trigger_key"] for r in rows})
    coupons = {v.name for v in campaign.variants if _variant_uses(v, "coupon")}
    for row, customer in zip(rows, people, strict=True):
        context = message_context(customer, campaign, campaigns, secret, when)
        context["recommendations"] = offers.get(row["key"], [])
        context["feedback"] = said.get(row["key"])
        if row["variant"] in coupons:  # a code only for a message that shows one
            code, expires = coupon_code(secret, campaign, row["key"], when)
            context.update(coupon=code, coupon_expires=expires.date().isoformat())
            row["coupon"] = (code, expires)
        rendered = render_message(campaign, row["variant"], context)
        row.update(track_links(rendered, row["key"], secret, campaigns.defaults.click_url))


def _release(
    store: Store,
    campaigns: CampaignFile,
    tests: list[Campaign],
    contacts: dict[str, dict[str, Any]],
    when: dt.datetime,
    result: RunResult,
) -> list[tuple[Campaign, list[dict[str, Any]]]]:
    """For each newsletter test (``auto_winner``) with messages waiting: once the
    sequential rule names a winner, or at the deadline the best so far, the waiting
    messages take the winner's variant and its timing. Returns them to render, by
    campaign; the decision goes to the run's notes."""
    from retain.experiments.analysis import pick_winner

    out: list[tuple[Campaign, list[dict[str, Any]]]] = []
    for campaign in tests:
        waiting = store.con.execute(
            "SELECT key, customer_id, trigger_key, created_at FROM campaign_outbox "
            "WHERE campaign = ? AND status = 'waiting' ORDER BY key",
            [campaign.name],
        ).fetchall()
        if not waiting:
            continue
        assert campaign.auto_winner is not None
        started = min(row[3] for row in waiting)
        deadline = started + dt.timedelta(hours=campaign.auto_winner.deadline_hours)
        winner, why = pick_winner(store, campaign, _utc(when), final=_utc(when) >= deadline)
        if winner is None:
            continue
        variant = next(v for v in campaign.variants if v.name == winner)
        result.notes.append(f"{campaign.name}: variant {winner} goes to the rest ({why})")
        picked = []
        for key, cid, trigger_key, created in waiting:
            row = {
                "key": key,
                "campaign": campaign.name,
                "customer_id": cid,
                "trigger_key": trigger_key,
                "variant": winner,
                "created_at": created,
                "reason": None,
                "not_before": None,
                **_timing(campaign, campaigns, variant, contacts.get(cid, {}), when),
            }
            if cid in contacts:
                picked.append(row)
        out.append((campaign, picked))
    return out


def _write_released(store: Store, rows: list[dict[str, Any]]) -> None:
    """The waiting rows given their variant, status and rendered message."""
    if not rows:
        return
    columns = (
        "key",
        "variant",
        "status",
        "reason",
        "not_before",
        "subject",
        "body_text",
        "body_html",
    )
    frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows])
    frame["not_before"] = pd.to_datetime(frame["not_before"])
    with store.transaction() as con:
        con.register("_released", frame)
        try:
            con.execute(
                """
                UPDATE campaign_outbox AS o
                SET variant = r.variant, status = r.status, reason = r.reason,
                    not_before = r.not_before, subject = r.subject,
                    body_text = r.body_text, body_html = r.body_html
                FROM _released AS r
                WHERE o.key = r.key AND o.status = 'waiting'
                """
            )
        finally:
            con.unregister("_released")
        _keep_coupons(con, rows, _utc(dt.datetime.now(dt.UTC)))


def _keep_coupons(con: Any, rows: list[dict[str, Any]], created: dt.datetime | None = None) -> None:
    """Record the coupon each message of ``rows`` shows (issued at ``created``, else at
    the row's own decision)."""
    coupons = [
        (code, row["campaign"], row["customer_id"], row["key"], created or row["created_at"], exp)
        for row in rows
        if row.get("coupon")
        for code, exp in [row["coupon"]]
    ]
    if coupons:
        con.executemany(
            "INSERT OR IGNORE INTO campaign_coupons "
            "(code, campaign, customer_id, outbox_key, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            coupons,
        )


def _taken(store: Store, names: list[str]) -> set[str]:
    if not store.has_table("campaign_outbox"):  # a store older than campaigns, read-only
        return set()
    found = store.con.execute(
        "SELECT key FROM campaign_outbox WHERE campaign IN (SELECT unnest(?))", [names]
    ).fetchall()
    return {r[0] for r in found}


def _cap_counts(store: Store, now: dt.datetime) -> dict[tuple[str, str | None, str], int]:
    """Messages on their way or sent per (customer, campaign or None for all, window)."""
    if not store.has_table("campaign_outbox"):  # a store older than campaigns, read-only
        return {}
    longest = max(CAP_WINDOWS.values())
    found = store.con.execute(
        """
        SELECT customer_id, campaign, created_at FROM campaign_outbox
        WHERE NOT transactional AND status IN (SELECT unnest(?)) AND created_at > ?
        """,
        [list(COUNTED), now - longest],
    ).fetchall()
    counts: dict[tuple[str, str | None, str], int] = {}
    for cid, name, created in found:
        for window, span in CAP_WINDOWS.items():
            if created > now - span:
                for scope in (None, name):
                    counts[(cid, scope, window)] = counts.get((cid, scope, window), 0) + 1
    return counts


def _decide(
    campaign: Campaign,
    campaigns: CampaignFile,
    person: dict[str, Any],
    cid: str,
    key: str,
    trigger_key: str,
    when: dt.datetime,
    suppressed: dict[str, set[str]],
    counts: dict[tuple[str, str | None, str], int],
    global_share: float = 0.0,
) -> dict[str, Any]:
    """The fate of one firing. Who may not be sent it (opted out, no address, capped) is
    left out first; the control groups are drawn from the rest, so that they hold the
    same kind of customer as the arms that are sent the message."""
    address = person.get("email")
    address = None if pd.isna(address) else str(address)
    variant = pick_variant(campaign, cid)
    row: dict[str, Any] = {
        "key": key,
        "campaign": campaign.name,
        "customer_id": cid,
        "trigger_key": trigger_key,
        "variant": variant.name,
        "channel": campaign.channel,
        "address": address,
        "transactional": campaign.transactional,
        "status": "queued",
        "reason": None,
        "created_at": _utc(when),
        "not_before": None,
        "subject": None,
        "body_text": None,
        "body_html": None,
    }
    accepts = person.get("accepts_marketing")
    refused = refusal(
        campaign.transactional, cid, None if pd.isna(accepts) else bool(accepts), suppressed
    )
    if refused:
        row.update(status="suppressed", reason=refused)
    elif campaign.channel == "email" and not _mailable(address):
        row.update(status="suppressed", reason="no e-mail address")
    elif not campaign.transactional and (capped := _capped(campaign, campaigns, cid, counts)):
        row.update(status="capped", reason=capped)
    elif not campaign.transactional and in_global_control(global_share, cid):
        row.update(
            status="control",
            variant="global control",
            reason=f"global control group ({global_share:.0%})",
        )
    elif in_control(campaign, cid):
        row.update(
            status="control",
            variant="control",
            reason=f"control group ({campaign.control_share:.0%})",
        )
    else:
        if not in_test(campaign, cid):
            row.update(status="waiting", variant=None, reason="waiting for the test's winner")
        else:
            row.update(_timing(campaign, campaigns, variant, person, when))
        if not campaign.transactional:
            for window in CAP_WINDOWS:
                for scope in (None, campaign.name):
                    counts[(cid, scope, window)] = counts.get((cid, scope, window), 0) + 1
    return row


def _timing(
    campaign: Campaign,
    campaigns: CampaignFile,
    variant: Variant,
    person: dict[str, Any],
    when: dt.datetime,
) -> dict[str, Any]:
    """``queued``, or ``held`` until the variant's delay has passed and the quiet hours
    in the customer's time zone are over."""
    at = when + dt.timedelta(hours=variant.delay_hours)
    reason = f"variant {variant.name}: {variant.delay_hours:g} h later" if at > when else None
    quiet = campaigns.defaults.quiet_hours
    local = at.astimezone(_zone(person.get("timezone"), when))
    if quiet is not None and not campaign.transactional and quiet.holds(local):
        at, reason = quiet.next_end(local), f"quiet hours in {local.tzinfo}"
    if at > when:
        return {"status": "held", "reason": reason, "not_before": _utc(at)}
    return {"status": "queued"}


def _mailable(address: str | None) -> bool:
    """Whether an address can be mailed at all: one @ with a name and a domain."""
    if not address or any(ch.isspace() for ch in address):
        return False
    name, _, domain = address.rpartition("@")
    return bool(name) and "." in domain and not domain.startswith(".")


def _capped(
    campaign: Campaign,
    campaigns: CampaignFile,
    cid: str,
    counts: dict[tuple[str, str | None, str], int],
) -> str | None:
    for scope, caps in ((None, campaigns.defaults.caps), (campaign.name, campaign.caps)):
        for window, cap in caps.items():
            if counts.get((cid, scope, window), 0) >= cap:
                whose = "across campaigns" if scope is None else "for this campaign"
                return f"cap of {cap} a {window} {whose}"
    return None


def _zone(name: Any, when: dt.datetime) -> dt.tzinfo:
    """The customer's time zone, else the store's (that of ``when``)."""
    if isinstance(name, str) and name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    assert when.tzinfo is not None
    return when.tzinfo


RECOMMENDED = 3
"""How many products ``recommendations`` holds in a template."""


def _check_topics(store: Store, campaigns: CampaignFile, chosen: list[Campaign]) -> None:
    """A complaint trigger's topics are the store's (a typo would never fire)."""
    named = [c for c in chosen if c.trigger.options.get("topics")]
    if not named:
        return
    from retain.feedback import store_taxonomy

    known = store_taxonomy(store).topics
    for campaign in named:
        unknown = [t for t in campaign.trigger.options["topics"] if t not in known]
        if unknown:
            raise DataError(
                f"{campaigns.path}: campaign {campaign.name}: trigger topics "
                f"{', '.join(unknown)} are not in the store's taxonomy; its topics are "
                f"{', '.join(known)}"
            )


def _uses(campaign: Campaign, name: str) -> bool:
    """Whether a template of the campaign reads the variable ``name``."""
    return any(_variant_uses(v, name) for v in campaign.variants)


def _variant_uses(variant: Variant, name: str) -> bool:
    from retain.campaigns.templates import uses

    return any(uses(text, name) for text in (variant.subject, variant.text, variant.html) if text)


def coupon_code(
    secret: bytes | None, campaign: Campaign, key: str, when: dt.datetime
) -> tuple[str, dt.datetime]:
    """The single-use code of the message ``key`` and when it expires (UTC): the same key
    always gives the same code, so a message rendered again carries the same one. The
    campaign's name leads it (WINBACK-7KQ2M9XZ3A). Without ``secret`` (a dry run, a
    preview) a placeholder."""
    prefix = "".join(ch for ch in campaign.name.upper() if ch.isalnum())[:8] or "RETAIN"
    expires = _utc(when).replace(microsecond=0) + dt.timedelta(days=campaign.coupon_days)
    if secret is None:
        return f"{prefix}-PREVIEW", expires
    digest = hmac.new(secret, f"coupon\x1f{key}".encode(), hashlib.sha256).digest()
    return f"{prefix}-{base64.b32encode(digest).decode()[:10]}", expires


def _redeem(store: Store) -> int:
    """Mark used each coupon an order carries (its first order within the coupon's life;
    the code compared without case or surrounding spaces); returns how many."""
    found = store.con.execute(
        """
        UPDATE campaign_coupons AS c
        SET redeemed_at = f.ordered_at, order_id = f.order_id
        FROM (
            SELECT c2.code, arg_min(o.order_id, o.ordered_at) AS order_id,
                   min(o.ordered_at) AS ordered_at
            FROM campaign_coupons c2
            JOIN orders o ON upper(trim(o.discount_code)) = c2.code
             AND o.ordered_at >= c2.created_at AND o.ordered_at <= c2.expires_at
            WHERE c2.redeemed_at IS NULL
            GROUP BY c2.code
        ) AS f
        WHERE c.code = f.code
        """
    ).fetchall()
    return int(found[0][0]) if found else 0


def _recommendations(
    store: Store,
    campaign: Campaign,
    rows: list[dict[str, Any]],
    held: dict[str, Any],
    discounts: dict[str, float | None],
) -> dict[str, list[dict[str, Any]]]:
    """For each message whose template uses ``recommendations``: the products to offer
    (``sku``, ``name``, ``reason``, ``price``, and ``member_price`` for a customer whose
    loyalty tier gives a discount: ``discounts``, percent by outbox key), by outbox key.
    After an order (``post_purchase``): what goes with that order; else what this
    customer is likely to buy next. Empty without order lines."""
    if not rows or not _uses(campaign, "recommendations"):
        return {}
    if "recommender" not in held:
        from retain.recommend import load_or_build

        has_lines = bool(store.scalar("SELECT count(*) FROM order_lines"))
        held["recommender"] = load_or_build(store) if has_lines else None
    recommender = held["recommender"]
    if recommender is None:
        return {}
    from retain.loyalty.rules import member_price

    keep = ("sku", "name", "reason")

    def priced(key: str, item: dict[str, Any]) -> dict[str, Any]:
        """The product as a template sees it: with its price (the median paid) and, for a
        customer whose loyalty tier gives a discount, the member price."""
        price = recommender.price(item["sku"])
        out = {**{k: item[k] for k in keep}, "price": price}
        if discounts[key]:
            out["member_price"] = member_price(price, discounts[key])
        return out

    if campaign.trigger.kind == "post_purchase":
        orders = {r["key"]: r["trigger_key"].removeprefix("order:") for r in rows}
        lines = store.con.execute(
            "SELECT order_id, list(DISTINCT sku) FROM order_lines "
            "WHERE order_id IN (SELECT unnest(?)) GROUP BY order_id",
            [list(set(orders.values()))],
        ).fetchall()
        skus = dict(lines)
        return {
            key: [
                priced(key, item)
                for item in recommender.recommend_for_cart(skus.get(order, []), RECOMMENDED)
            ]
            for key, order in orders.items()
            if skus.get(order)
        }
    from retain.recommend import recommend_for_customers

    people = sorted({r["customer_id"] for r in rows})
    ranked = recommend_for_customers(store, people, RECOMMENDED, recommender=recommender)
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for cid, sku, name, reason in ranked[["customer_id", *keep]].itertuples(index=False):
        by_customer.setdefault(str(cid), []).append({"sku": sku, "name": name, "reason": reason})
    return {
        r["key"]: [priced(r["key"], item) for item in by_customer.get(r["customer_id"], [])]
        for r in rows
    }


def customer_rows(frame: pd.DataFrame, positions: list[int]) -> list[dict[str, Any]]:
    """The rows at ``positions`` of :func:`retain.campaigns.triggers.customer_fields` as
    the plain values a template sees: days as ``YYYY-MM-DD`` (a day is what a message
    speaks of), missing values as None, and ``clv`` the 12-month CLV."""
    picked = frame.iloc[positions]
    columns: dict[str, list[Any]] = {"customer_id": [str(i) for i in picked.index]}
    for name in picked.columns:
        values = picked[name]
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            shown = values.dt.strftime("%Y-%m-%d")
            columns[str(name)] = [None if pd.isna(v) else v for v in shown.tolist()]
        else:
            columns[str(name)] = [None if _missing(v) else v for v in values.tolist()]
    columns["clv"] = columns.get("clv_12m", [None] * len(picked))
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and value != value


def message_context(
    customer: dict[str, Any],
    campaign: Campaign,
    campaigns: CampaignFile,
    secret: bytes | None,
    when: dt.datetime,
) -> dict[str, Any]:
    """What a template sees for one customer (see :mod:`retain.campaigns.templates`):
    ``customer`` (a row of :func:`customer_rows`), ``campaign`` and ``unsubscribe_url``
    (None for a transactional message; a placeholder without ``secret``, in previews)."""
    url = None
    if not campaign.transactional:
        token = "preview"
        if secret is not None:
            # from the real clock, not the run's moment: the link lives from its sending
            expires = _utc(max(when, dt.datetime.now(dt.UTC))) + dt.timedelta(days=UNSUBSCRIBE_DAYS)
            token = unsubscribe_token(secret, customer["customer_id"], expires)
        url = f"{campaigns.defaults.unsubscribe_url}?token={token}"
    return {"customer": customer, "campaign": campaign.name, "unsubscribe_url": url}


def render_message(
    campaign: Campaign, variant_name: str, context: dict[str, Any]
) -> dict[str, Any]:
    """The rendered subject and parts of the customer's variant."""
    from retain.campaigns.templates import render

    variant = next(v for v in campaign.variants if v.name == variant_name)
    subject = render(variant.subject, context, campaign=campaign.name, part="subject")
    return {
        "subject": " ".join(subject.split()),  # one line: no header folding, no injection
        "body_text": render(variant.text, context, campaign=campaign.name, part="text"),
        "body_html": None
        if variant.html is None
        else render(variant.html, context, campaign=campaign.name, part="html"),
        "unsubscribe_url": context["unsubscribe_url"],
    }


_COLUMNS = (
    "key",
    "campaign",
    "customer_id",
    "trigger_key",
    "variant",
    "channel",
    "address",
    "transactional",
    "status",
    "reason",
    "created_at",
    "not_before",
    "attempts",
    "sent_at",
    "delivery_id",
    "subject",
    "body_text",
    "body_html",
)


def _write(store: Store, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    frame = pd.DataFrame([{**{c: None for c in _COLUMNS}, **row, "attempts": 0} for row in rows])[
        list(_COLUMNS)
    ]
    frame["transactional"] = frame["transactional"].astype(bool)
    frame["attempts"] = frame["attempts"].astype("int32")
    for column in ("created_at", "not_before", "sent_at"):
        frame[column] = pd.to_datetime(frame[column])
    with store.transaction() as con:
        con.register("_outbox_rows", frame)
        try:
            con.execute(
                f"INSERT INTO campaign_outbox ({', '.join(_COLUMNS)}) "
                f"SELECT {', '.join(_COLUMNS)} FROM _outbox_rows"
            )
        finally:
            con.unregister("_outbox_rows")
        _keep_coupons(con, rows)


def _reconcile(store: Store, channels: dict[str, Any], result: RunResult) -> None:
    """Settle the rows a crashed run left ``sending`` (see the module): first its
    journal is folded in, which leaves ``sending`` the message in flight when it died."""
    lines = _read_journal(store)
    if lines:
        _fold(store, lines, _utc(dt.datetime.now(dt.UTC)))
        path = _journal_path(store)
        if path is not None:
            path.unlink(missing_ok=True)
    left = store.con.execute(
        "SELECT key, campaign, channel, delivery_id FROM campaign_outbox WHERE status = 'sending'"
    ).fetchall()
    for key, _name, channel, delivery_id in left:
        files: Any = channels.get("file")
        written = delivery_id or (str(files.path_of(key)) if hasattr(files, "path_of") else None)
        if channel == "webhook":
            status, reason = "queued", "resent after a crash, same idempotency key"
        elif channel == "file" and written and Path(written).exists():
            status, reason = "sent", "found written after a crash"
        elif channel == "file":
            status, reason = "queued", "not written before a crash"
        else:
            status, reason = "unconfirmed", "the run stopped while the server had it; not resent"
        store.con.execute(
            "UPDATE campaign_outbox SET status = ?, reason = ? WHERE key = ?", [status, reason, key]
        )
    if left:
        result.notes.append(f"{len(left)} message(s) left sending by an earlier run settled")


def _deliver(
    store: Store,
    campaigns: CampaignFile,
    channels: dict[str, Any],
    when: dt.datetime,
    result: RunResult,
    limit: int | None = None,
    chosen: list[Campaign] | None = None,
) -> None:
    from retain.campaigns.channels import DeliveryError, Message

    if limit is not None and limit <= 0:
        return
    pairs = [[c.name, c.channel] for c in chosen] if chosen is not None else None

    now = _utc(when)
    ready = store.con.execute(
        """
        SELECT key, campaign, customer_id, channel, address, transactional, subject, body_text,
               body_html, attempts
        FROM campaign_outbox
        WHERE status IN ('queued', 'held') AND (not_before IS NULL OR not_before <= ?)
          AND (CAST(? AS VARCHAR[][]) IS NULL OR [campaign, channel] IN (SELECT unnest(?)))
        ORDER BY created_at, key
        LIMIT ?
        """,
        [now, pairs, pairs, limit],
    ).fetchall()
    if not ready:
        return
    suppressed = _suppressed(store)
    accepts = dict(
        store.con.execute("SELECT customer_id, accepts_marketing FROM customers").fetchall()
    )
    secret = _secret(store, create=True)
    assert secret is not None
    opened: dict[str, Any] = {}
    paced: dict[str, float] = {}
    retried: dict[str, int] = {}
    journal = _Journal(store)
    try:
        for key, name, cid, kind, address, transactional, subject, text, html, attempts in ready:
            refused = refusal(transactional, cid, accepts.get(cid), suppressed)
            if refused:  # since the decision: an opt-out takes effect at once
                journal.write("suppressed", key, refused)
                result.add(name, "suppressed")
                continue
            channel = opened.get(kind) or channels.get(kind)
            if channel is None:
                channel = channel_for(kind, campaigns, store)
            opened[kind] = channel
            url = None
            if not transactional:
                expires = max(now, _utc(dt.datetime.now(dt.UTC))) + dt.timedelta(
                    days=UNSUBSCRIBE_DAYS
                )
                url = f"{campaigns.defaults.unsubscribe_url}?token={unsubscribe_token(secret, cid, expires)}"
            message = Message(
                key=key,
                campaign=name,
                customer_id=cid,
                to=address or "",
                subject=subject or "",
                text=text or "",
                html=html,
                unsubscribe_url=url,
                transactional=bool(transactional),
                data={"customer_id": cid},
            )
            rate = campaigns.defaults.rate.get(kind)
            if rate:  # at most `rate` messages a second through this channel
                pace(paced, kind, rate)
            journal.write("sending", key)
            try:
                delivery_id = channel.send(message)
            except DeliveryError as exc:
                final = exc.permanent or attempts + 1 >= MAX_ATTEMPTS
                status = "unconfirmed" if exc.uncertain else "failed" if final else "queued"
                journal.write(status, key, str(exc))
                result.add(name, status)
                if status == "queued":
                    retried[str(exc)] = retried.get(str(exc), 0) + 1
                continue
            journal.write("sent", key, str(delivery_id))
            result.add(name, "sent")
    finally:
        for channel in opened.values():
            channel.close()
        journal.fold(store, now)
        for error, count in retried.items():
            result.notes.append(
                f"{count:,} message(s) not delivered, tried again by a later run: {error}"
            )


def pace(
    last: dict[str, float],
    kind: str,
    rate: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until ``1 / rate`` seconds have passed since the last send through ``kind``
    (``last`` keeps the moments, by channel), then note this one."""
    pause = last.get(kind, float("-inf")) + 1.0 / rate - clock()
    if pause > 0:
        sleep(pause)
    last[kind] = clock()


class _Journal:
    """Each message's fate as it happens, one line a step, flushed to the operating system
    before the next step: ``sending`` before the channel is given the message, then
    ``sent``, ``failed`` or ``queued`` (to try again). Folded into the outbox in one
    statement when the run ends (or by the next run, after a crash), which spares two
    store commits a message. Lines reach the file at once, so a killed process loses
    none; a power cut may lose the last ones. A store in memory keeps them in memory."""

    def __init__(self, store: Store) -> None:
        self.path = _journal_path(store)
        self.lines: list[tuple[str, ...]] = []
        self.fd = (
            None
            if self.path is None
            else os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        )

    def write(self, status: str, key: str, detail: str = "") -> None:
        stamp = _utc(dt.datetime.now(dt.UTC)).isoformat()
        entry = (status, key, detail, stamp)
        self.lines.append(entry)
        if self.fd is not None:
            os.write(self.fd, (json.dumps(entry) + "\n").encode())

    def fold(self, store: Store, now: dt.datetime) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        _fold(store, self.lines, now)
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _journal_path(store: Store) -> Path | None:
    return None if store.path == ":memory:" else Path(store.path + ".outbox-journal")


def _fold(store: Store, lines: list[tuple[str, ...]], now: dt.datetime) -> None:
    """Write the journal's last word on each message into the outbox, in one statement."""
    last: dict[str, tuple[str, ...]] = {}
    tries: dict[str, int] = {}
    for entry in lines:
        status, key = entry[0], entry[1]
        last[key] = entry
        if status == "sending":
            tries[key] = tries.get(key, 0) + 1
    if not last:
        return
    rows = []
    for key, (status, _key, detail, stamp) in last.items():
        rows.append(
            {
                "key": key,
                "status": status,
                "reason": None if status == "sent" else detail or None,
                "delivery_id": detail if status == "sent" else None,
                "sent_at": dt.datetime.fromisoformat(stamp) if status == "sent" else None,
                "not_before": now + RETRY_AFTER if status == "queued" else None,
                "tries": tries.get(key, 0),
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("sent_at", "not_before"):
        frame[column] = pd.to_datetime(frame[column])
    with store.transaction() as con:
        con.register("_journal", frame)
        try:
            con.execute(
                """
                UPDATE campaign_outbox AS o
                SET status = j.status, reason = j.reason,
                    delivery_id = coalesce(j.delivery_id, o.delivery_id),
                    sent_at = coalesce(j.sent_at, o.sent_at),
                    not_before = CASE WHEN j.status = 'queued' THEN j.not_before
                                      ELSE o.not_before END,
                    attempts = o.attempts + j.tries
                FROM _journal AS j
                WHERE o.key = j.key
                """
            )
        finally:
            con.unregister("_journal")


def _read_journal(store: Store) -> list[tuple[str, ...]]:
    """The lines a crashed run left in its journal (a torn last line is dropped)."""
    path = _journal_path(store)
    if path is None or not path.exists():
        return []
    lines: list[tuple[str, ...]] = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = tuple(str(part) for part in json.loads(text))
        except ValueError:
            continue
        if len(entry) == 4:
            lines.append(entry)
    return lines


def channel_for(kind: str, campaigns: CampaignFile, store: Store | None = None) -> Any:
    """The channel of ``kind`` from the settings: e-mail from ``RETAIN_SMTP_URL``, else the
    store's ``smtp_url`` setting (``smtp://[user:pass@]host:port[?starttls=1]``), the
    webhook from the file's ``webhook_url`` signed with ``RETAIN_WEBHOOK_SECRET``, files
    into ``outbox_dir``."""
    from retain.campaigns import channels

    defaults = campaigns.defaults
    if kind == "email":
        url = os.environ.get("RETAIN_SMTP_URL")
        if not url and store is not None:
            from retain.config import load_settings

            url = load_settings(store).smtp_url
        if not url:
            raise ArgumentError(
                "no SMTP server: set RETAIN_SMTP_URL=smtp://[user:pass@]host:port[?starttls=1] "
                "or `retain settings set smtp_url URL`, or use --dry-run"
            )
        return channels.SmtpChannel(channels.parse_smtp_url(url), defaults.sender)
    if kind == "webhook":
        secret = os.environ.get("RETAIN_WEBHOOK_SECRET")
        if not defaults.webhook_url or not secret:
            raise ArgumentError(
                f"the webhook channel needs webhook_url in [defaults] of {campaigns.path} "
                "and RETAIN_WEBHOOK_SECRET (the key its receiver checks the signature with)"
            )
        return channels.WebhookChannel(defaults.webhook_url, secret)
    return channels.FileChannel(Path(defaults.outbox_dir))


def campaign_report(store: Store, name: str | None = None) -> pd.DataFrame:
    """Per campaign: outbox rows by status, the orders and net revenue of the customers
    sent a message within 7 days after it was sent (attribution window), and the
    coupons issued and redeemed."""
    if not store.has_table("campaign_outbox"):  # a store older than campaigns, read-only
        return pd.DataFrame(columns=["campaign", *STATUSES])
    coupons = (
        "SELECT campaign, count(*) AS issued, count(redeemed_at) AS redeemed "
        "FROM campaign_coupons GROUP BY campaign"
        if store.has_table("campaign_coupons")
        else "SELECT NULL::VARCHAR AS campaign, 0 AS issued, 0 AS redeemed WHERE false"
    )
    where = "" if name is None else "WHERE o.campaign = $name"
    return store.con.execute(
        f"""
        WITH sent AS (
            SELECT campaign, customer_id, min(sent_at) AS sent_at
            FROM campaign_outbox WHERE status = 'sent' GROUP BY ALL
        ),
        after AS (
            SELECT s.campaign, count(o.order_id) AS orders, coalesce(sum(o.net_revenue), 0) AS net_revenue
            FROM sent s JOIN orders o
              ON o.customer_id = s.customer_id AND o.ordered_at >= s.sent_at
             AND o.ordered_at < s.sent_at + INTERVAL 7 DAY
            GROUP BY s.campaign
        ),
        coupons AS ({coupons})
        SELECT o.campaign,
               count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'held') AS held,
               count(*) FILTER (WHERE status = 'capped') AS capped,
               count(*) FILTER (WHERE status = 'suppressed') AS suppressed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'control') AS control,
               count(*) FILTER (WHERE status IN ('queued', 'sending')) AS queued,
               count(*) FILTER (WHERE status = 'unconfirmed') AS unconfirmed,
               count(*) FILTER (WHERE status = 'waiting') AS waiting,
               any_value(coalesce(a.orders, 0)) AS orders_within_7d,
               any_value(coalesce(a.net_revenue, 0)) AS net_revenue_within_7d,
               any_value(coalesce(k.issued, 0)) AS coupons_issued,
               any_value(coalesce(k.redeemed, 0)) AS coupons_redeemed
        FROM campaign_outbox o LEFT JOIN after a USING (campaign)
        LEFT JOIN coupons k USING (campaign)
        {where}
        GROUP BY o.campaign ORDER BY o.campaign
        """,
        {} if name is None else {"name": name},
    ).df()


def preview(
    store: Store, campaigns: CampaignFile, name: str, customer_id: str
) -> list[dict[str, Any]]:
    """The message each variant of campaign ``name`` would give ``customer_id`` now (the
    unsubscribe link a placeholder), whether or not the trigger fires for them."""
    from retain.campaigns.triggers import (
        FEEDBACK_TRIGGERS,
        customer_fields,
        feedback_context,
        feedback_firings,
    )

    campaign = campaigns.get(name)
    frame = customer_fields(store)
    if customer_id not in frame.index:
        raise DataError("no such customer with an order", value=customer_id)
    position = frame.index.get_loc(customer_id)  # ids are unique: one row
    assert isinstance(position, int)
    customer = customer_rows(frame, [position])[0]
    context = message_context(customer, campaign, campaigns, None, moment(None, store))
    trigger_key = ""
    if campaign.trigger.kind == "post_purchase":  # the customer's latest order
        latest = store.con.execute(
            "SELECT order_id FROM orders WHERE customer_id = ? ORDER BY ordered_at DESC LIMIT 1",
            [customer_id],
        ).fetchall()
        trigger_key = f"order:{latest[0][0]}" if latest else ""
    elif campaign.trigger.kind in FEEDBACK_TRIGGERS:  # the customer's latest firing
        fired = feedback_firings(
            store, pd.Index([customer_id]), campaign.trigger.kind,
            campaign.trigger.options.get("topics", ()), dt.date.min,
            moment(None, store).date(),
        )  # fmt: skip
        trigger_key = str(fired["trigger_key"].iloc[-1]) if len(fired) else ""
        if not trigger_key and _uses(campaign, "feedback"):
            raise DataError(
                f"{customer_id} has said nothing that fires the {campaign.trigger.kind} "
                f"trigger of {name}, and its template shows what was said: preview a customer "
                "who has",
                value=customer_id,
            )
    row = {"key": "preview", "customer_id": customer_id, "trigger_key": trigger_key}
    context["feedback"] = feedback_context(store, {"preview": trigger_key}).get("preview")
    discount = {"preview": customer.get("tier_discount")}
    offers = _recommendations(store, campaign, [row], {}, discount)
    context["recommendations"] = offers.get("preview", [])
    code, expires = coupon_code(None, campaign, "preview", moment(None, store))
    context.update(coupon=code, coupon_expires=expires.date().isoformat())
    address = customer.get("email")
    return [
        {
            "campaign": name,
            "variant": variant.name,
            "customer_id": customer_id,
            "address": None if address is None else str(address),
            **render_message(campaign, variant.name, context),
        }
        for variant in campaign.variants
    ]


def unsubscribe(store: Store, token: str, *, now: dt.datetime | None = None) -> str:
    """Record the opt-out an unsubscribe link carries (at once, for every later send and
    audience); returns the customer's id. A link that is not this store's, or expired,
    raises :class:`DataError`. Clicking twice is harmless."""
    customer_id = read_unsubscribe_token(store, token, now)
    suppress(store, customer_id, reason="unsubscribed", scope="marketing", source="link")
    return customer_id
