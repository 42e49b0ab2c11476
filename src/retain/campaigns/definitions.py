"""Campaign definitions: a TOML file of campaigns, checked before anything is sent.

A file holds ``[defaults]`` (sender, caps across every campaign, quiet hours, the
unsubscribe base URL) and one ``[[campaign]]`` table per campaign::

    [defaults]
    sender = "Shop <shop@example.com>"
    caps = { day = 1, week = 3, month = 8 }      # messages per customer, all campaigns
    quiet_hours = { start = "21:00", end = "08:00" }   # in the customer's time zone

    [[campaign]]
    name = "next-purchase"
    trigger = { kind = "next_purchase_window" }
    audience = { segments = ["Loyal Customers", "Champions"], min_p_alive = 0.3 }
    channel = "email"
    subject = "Time for a refill, {{ customer.name }}?"
    text = "..."
    caps = { week = 1 }                           # this campaign, per customer
    control_share = 0.1

A mistake is reported with the file, the line and the field, before any message goes out
(:func:`load_campaigns`; ``retain campaigns validate FILE``).
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retain.errors import DataError
from retain.segments.risk import RISK_LEVELS

TRIGGERS: dict[str, str] = {
    "next_purchase_window": "the customer's predicted next-purchase window opens (latest scores)",
    "overdue": "days since the last order reach `factor` x the customer's own typical gap",
    "churn_risk": "the customer's churn risk is one of `levels` (once per level per last order)",
    "post_purchase": "`days` days after an order (once per order)",
    "birthday": "the customer's birthday (customers.birthday; once a year)",
    "anniversary": "the anniversary of the first order (once a year, from the first year)",
    "broadcast": "once, at `at` (an ISO date-time in the store's time zone), to the audience",
    "segment_entered": "the customer moved into `segment` since the previous run",
    "segment_left": "the customer moved out of `segment` since the previous run",
    "tier_entered": "a loyalty build moved the customer into `tier` (retain loyalty build)",
    "tier_left": "a loyalty build moved the customer out of `tier`",
    "detractor": "the customer answered the NPS survey with 0 to 6 (once per answer)",
    "complaint": "the customer complained (a negative survey answer, review or ticket) of one "
    "of `topics` (every topic when none is given; once per text)",
    "cart_abandoned": "`hours` (default 4) after the customer's last add to cart or checkout "
    "started with no order since (once per cart)",
    "browse_abandoned": "`hours` (default 24) after the customer last viewed a product with no "
    "cart or order since (once per view)",
}
"""Every trigger kind and when it fires; each firing has a stable key per customer."""

TRIGGER_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "next_purchase_window": {},
    "overdue": {"factor": (int, float)},
    "churn_risk": {"levels": list},
    "post_purchase": {"days": int},
    "birthday": {},
    "anniversary": {},
    "broadcast": {"at": (str, dt.datetime, dt.date)},
    "segment_entered": {"segment": str},
    "segment_left": {"segment": str},
    "tier_entered": {"tier": str},
    "tier_left": {"tier": str},
    "detractor": {},
    "complaint": {"topics": list},
    "cart_abandoned": {"hours": (int, float)},
    "browse_abandoned": {"hours": (int, float)},
}
OPTION_EXAMPLES: dict[str, str] = {
    "factor": "a number of typical gaps, e.g. factor = 1.5",
    "levels": 'a list of risk levels, e.g. levels = ["high", "lost"]',
    "days": "a whole number of days, e.g. days = 7",
    "at": 'an ISO date-time, e.g. at = "2025-12-01T10:00"',
    "segment": 'a segment name, e.g. segment = "At Risk"',
    "tier": 'a tier name, e.g. tier = "Gold"',
    "topics": 'a list of topic ids, e.g. topics = ["delivery", "damaged"]',
    "hours": "a number of hours, e.g. hours = 4",
}
"""What each trigger option takes, for the message when it is given something else."""
TRIGGER_DEFAULTS: dict[str, dict[str, Any]] = {
    "overdue": {"factor": 1.5},
    "churn_risk": {"levels": ["high"]},
    "post_purchase": {"days": 7},
    "cart_abandoned": {"hours": 4},
    "browse_abandoned": {"hours": 24},
}
CHANNELS = ("email", "webhook", "file")
CAP_WINDOWS = {
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(days=7),
    "month": dt.timedelta(days=30),
}
"""Caps count messages in the rolling window before the moment of sending."""

_CAMPAIGN_KEYS = {
    "name",
    "description",
    "trigger",
    "audience",
    "channel",
    "subject",
    "text",
    "html",
    "variants",
    "caps",
    "control_share",
    "transactional",
    "enabled",
    "catch_up_days",
    "coupon_days",
    "auto_winner",
}
_AUDIENCE_KEYS = {"segments", "churn_risk", "min_p_alive", "min_clv", "min_orders", "max_orders"}
_VARIANT_KEYS = {"name", "subject", "text", "html", "weight", "delay_hours"}
ARMS = ("control", "global control")
"""The names of the arms that get no message: not a variant's name."""
WINNER_METRICS = ("clicks", "orders")
_AUTO_WINNER_KEYS = {"test_share", "deadline_hours", "metric"}
_DEFAULT_KEYS = {
    "sender",
    "caps",
    "quiet_hours",
    "unsubscribe_url",
    "webhook_url",
    "outbox_dir",
    "rate",
    "click_url",
    "track_clicks",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Trigger:
    """When a campaign fires: ``kind`` (one of :data:`TRIGGERS`) and its options."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Audience:
    """Who may receive a campaign: every condition given must hold (none: everyone)."""

    segments: tuple[str, ...] = ()
    churn_risk: tuple[str, ...] = ()
    min_p_alive: float | None = None
    min_clv: float | None = None
    min_orders: int | None = None
    max_orders: int | None = None


@dataclass(frozen=True)
class Variant:
    """One version of a message: Jinja2 templates of its subject, text and HTML."""

    name: str
    subject: str
    text: str
    html: str | None = None
    weight: float = 1.0
    delay_hours: float = 0.0
    """Sent this many hours after the trigger fires (a test of timing)."""


@dataclass(frozen=True)
class AutoWinner:
    """A newsletter's test: the variants go to ``test_share`` of the audience; the rest
    wait for the variant that wins on ``metric`` (the sequential rule of
    :mod:`retain.experiments.stats`), or for the best so far ``deadline_hours`` after the
    test went out."""

    test_share: float
    deadline_hours: float = 24.0
    metric: str = "clicks"


@dataclass(frozen=True)
class QuietHours:
    """Local clock times between which nothing marketing is sent (``start`` > ``end``
    spans midnight)."""

    start: dt.time
    end: dt.time

    def holds(self, local: dt.datetime) -> bool:
        """Whether the local time falls in the quiet hours."""
        clock = local.time()
        if self.start <= self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end

    def next_end(self, local: dt.datetime) -> dt.datetime:
        """The first moment at or after ``local`` (held) when the quiet hours end."""
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        return end if end > local else end + dt.timedelta(days=1)


@dataclass(frozen=True)
class Campaign:
    """One campaign: trigger, audience, channel, variants, caps and control share."""

    name: str
    trigger: Trigger
    channel: str
    variants: tuple[Variant, ...]
    audience: Audience = field(default_factory=Audience)
    caps: dict[str, int] = field(default_factory=dict)
    control_share: float = 0.0
    transactional: bool = False
    enabled: bool = True
    description: str = ""
    catch_up_days: int = 3
    coupon_days: int = 14
    auto_winner: AutoWinner | None = None
    line: int = 0


@dataclass(frozen=True)
class Defaults:
    """Settings every campaign of a file shares."""

    sender: str = "retain <retain@localhost>"
    caps: dict[str, int] = field(default_factory=lambda: {"day": 1, "week": 3, "month": 8})
    quiet_hours: QuietHours | None = None
    unsubscribe_url: str = "http://127.0.0.1:8765/unsubscribe"
    webhook_url: str | None = None
    outbox_dir: str = "outbox"
    rate: dict[str, float] = field(default_factory=dict)
    """At most this many messages a second through a channel (none: as fast as it takes)."""
    click_url: str | None = None
    """Where tracked links point (``retain serve``'s /click); None: no link is tracked."""


@dataclass(frozen=True)
class CampaignFile:
    """A campaign file read and checked: its defaults and campaigns, in file order."""

    path: str
    defaults: Defaults
    campaigns: tuple[Campaign, ...]

    def summary(self) -> list[dict[str, Any]]:
        """One plain row per campaign: name, enabled, trigger and its options, channel,
        variants, audience (the conditions given), caps, control share, transactional."""
        import dataclasses

        return [
            {
                "name": c.name,
                "enabled": c.enabled,
                "trigger": c.trigger.kind,
                "options": {
                    k: v.isoformat() if isinstance(v, dt.date) else v
                    for k, v in c.trigger.options.items()
                },
                "channel": c.channel,
                "variants": [v.name for v in c.variants],
                "audience": {
                    k: v for k, v in dataclasses.asdict(c.audience).items() if v not in ((), None)
                },
                "caps": c.caps,
                "control_share": c.control_share,
                "transactional": c.transactional,
            }
            for c in self.campaigns
        ]

    def get(self, name: str) -> Campaign:
        for campaign in self.campaigns:
            if campaign.name == name:
                return campaign
        known = ", ".join(c.name for c in self.campaigns) or "none"
        raise DataError("no such campaign", file=self.path, value=name, expected=known)


def example_path() -> Path:
    """The example campaigns shipped with retain (``retain campaigns init``)."""
    return Path(__file__).with_name("examples.toml")


def load_campaigns(path: str | Path) -> CampaignFile:
    """Read and check a campaign file; a mistake raises :class:`DataError` naming the
    file, the line and the field. The templates are compiled too (a syntax error is a
    mistake of the file), but not rendered: an unknown field shows in a preview."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            "no campaign file",
            file=str(path),
            expected="a TOML file of campaigns (retain campaigns init --out FILE writes one)",
        ) from None
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", file=str(path)) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise DataError(
            f"cannot read it ({exc.strerror})",
            file=str(path),
            expected="a readable TOML file of campaigns",
        ) from None
    return parse_campaigns(text, str(path))


def parse_campaigns(text: str, path: str = "<campaigns>") -> CampaignFile:
    """:func:`load_campaigns` of the text of a file (``path`` names it in errors)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"not valid TOML ({exc})", file=path) from None
    lines = text.splitlines()
    where = _Locator(path, lines)
    unknown = set(raw) - {"defaults", "campaign"}
    if unknown:
        key = sorted(unknown)[0]
        where.fail(None, key, f"unknown table or key {key!r}", "[defaults] and [[campaign]] tables")
    defaults = _defaults(raw.get("defaults", {}), where)
    entries = raw.get("campaign", [])
    if not isinstance(entries, list) or not entries:
        where.fail(None, "campaign", "no [[campaign]] table", "at least one [[campaign]]")
    campaigns: list[Campaign] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries):
        campaign = _campaign(entry, number, where)
        if campaign.name in seen:
            where.fail(
                number, "name", f"campaign name {campaign.name!r} used twice", "unique names"
            )
        seen.add(campaign.name)
        test = campaign.auto_winner
        if test is not None and test.metric == "clicks" and defaults.click_url is None:
            where.fail(
                number,
                "auto_winner",
                "a test decided on clicks with track_clicks = false: no click is counted",
                'metric = "orders", or track_clicks = true in [defaults]',
                campaign.name,
            )
        campaigns.append(campaign)
    return CampaignFile(path, defaults, tuple(campaigns))


class _Locator:
    """Finds the line of a field in the file, for error messages."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.starts = [
            i for i, line in enumerate(lines) if re.match(r"^\s*\[\[\s*campaign\s*\]\]", line)
        ]

    def line_of(self, number: int | None, key: str) -> int:
        if number is None:
            first, last = 0, (self.starts[0] if self.starts else len(self.lines))
        else:
            first = self.starts[number] if number < len(self.starts) else 0
            later = [s for s in self.starts if s > first]
            last = later[0] if later else len(self.lines)
        pattern = re.compile(rf"(^|[\s{{,]){re.escape(key)}\s*=")
        for i in range(first, last):
            if pattern.search(self.lines[i]):
                return i + 1
        return first + 1

    def fail(
        self, number: int | None, key: str, message: str, expected: str, name: str | None = None
    ) -> None:
        line = self.line_of(number, key)
        what = f"campaign {name!r}: " if name else ""
        raise DataError(f"line {line}: {what}{message}", file=self.path, expected=expected)


def _caps(value: Any, where: _Locator, number: int | None, name: str | None) -> dict[str, int]:
    if not isinstance(value, dict):
        where.fail(number, "caps", "caps must be a table", "{ day = 1, week = 3 }", name)
    caps: dict[str, int] = {}
    for window, count in value.items():
        if window not in CAP_WINDOWS:
            where.fail(number, "caps", f"unknown cap window {window!r}", "day, week or month", name)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            where.fail(number, "caps", f"cap {window} = {count!r}", "a whole number >= 0", name)
        caps[window] = count
    return caps


def _clock(value: Any, where: _Locator, key: str) -> dt.time:
    if isinstance(value, dt.time):
        return value
    match = _CLOCK.match(str(value))
    if not match:
        where.fail(None, key, f"quiet_hours {key} = {value!r}", "a clock time HH:MM")
        raise AssertionError  # unreachable: fail raises
    return dt.time(int(match[1]), int(match[2]))


def _defaults(raw: Any, where: _Locator) -> Defaults:
    if not isinstance(raw, dict):
        where.fail(None, "defaults", "[defaults] must be a table", "[defaults]")
    unknown = set(raw) - _DEFAULT_KEYS
    if unknown:
        key = sorted(unknown)[0]
        where.fail(None, key, f"unknown default {key!r}", ", ".join(sorted(_DEFAULT_KEYS)))
    values: dict[str, Any] = {}
    for key in ("sender", "unsubscribe_url", "webhook_url", "outbox_dir", "click_url"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key].strip():
                where.fail(None, key, f"{key} must be text", "a non-empty string")
            values[key] = raw[key].strip()
    if "sender" in values and "@" not in values["sender"]:
        where.fail(None, "sender", "sender has no e-mail address", '"Shop <shop@example.com>"')
    if "caps" in raw:
        values["caps"] = _caps(raw["caps"], where, None, None)
    if "rate" in raw:
        rate = raw["rate"]
        if not isinstance(rate, dict) or any(
            kind not in CHANNELS or isinstance(n, bool) or not isinstance(n, int | float) or n <= 0
            for kind, n in rate.items()
        ):
            where.fail(None, "rate", f"rate = {rate!r}", "{ email = 100 } (messages a second)")
        values["rate"] = {kind: float(n) for kind, n in rate.items()}
    if "quiet_hours" in raw:
        quiet = raw["quiet_hours"]
        if not isinstance(quiet, dict) or set(quiet) != {"start", "end"}:
            where.fail(
                None,
                "quiet_hours",
                "quiet_hours needs start and end",
                '{ start = "21:00", end = "08:00" }',
            )
        start, end = _clock(quiet["start"], where, "start"), _clock(quiet["end"], where, "end")
        if start == end:
            where.fail(None, "quiet_hours", "quiet_hours start equals end", "two different times")
        values["quiet_hours"] = QuietHours(start, end)
    track = raw.get("track_clicks", True)
    if not isinstance(track, bool):
        where.fail(None, "track_clicks", f"track_clicks = {track!r}", "true or false")
    if not track:
        values["click_url"] = None
    elif "click_url" not in values:
        # the service that answers the unsubscribe link answers the tracked links too
        base = values.get("unsubscribe_url", Defaults.unsubscribe_url)
        values["click_url"] = _origin(base) + "/click"
    return Defaults(**values)


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (the whole text when it has no path)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url.rstrip("/")


def _campaign(entry: Any, number: int, where: _Locator) -> Campaign:
    if not isinstance(entry, dict):
        where.fail(number, "campaign", "a campaign must be a table", "[[campaign]]")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        where.fail(
            number,
            "name",
            f"campaign name {name!r}",
            "lower-case letters, digits, - and _ (up to 63), e.g. win-back",
        )
    unknown = set(entry) - _CAMPAIGN_KEYS
    if unknown:
        key = sorted(unknown)[0]
        where.fail(number, key, f"unknown field {key!r}", ", ".join(sorted(_CAMPAIGN_KEYS)), name)

    trigger = _trigger(entry.get("trigger"), number, where, name)
    channel = entry.get("channel", "email")
    if channel not in CHANNELS:
        where.fail(number, "channel", f"unknown channel {channel!r}", " or ".join(CHANNELS), name)
    variants = _variants(entry, number, where, name)
    if trigger.kind not in ("detractor", "complaint"):
        from retain.campaigns.templates import uses

        for variant in variants:
            if any(uses(t, "feedback") for t in (variant.subject, variant.text, variant.html) if t):
                where.fail(
                    number,
                    "text",
                    f"a template shows feedback, which only a detractor or complaint "
                    f"trigger has (this one is {trigger.kind})",
                    'trigger = { kind = "complaint" }, or no feedback in the template',
                    name,
                )
    audience = _audience(entry.get("audience", {}), number, where, name)
    caps = _caps(entry.get("caps", {}), where, number, name)
    share = entry.get("control_share", 0.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
        where.fail(number, "control_share", f"control_share = {share!r}", "a share in [0, 1)", name)
    flags = {}
    for key, default in (("transactional", False), ("enabled", True)):
        value = entry.get(key, default)
        if not isinstance(value, bool):
            where.fail(number, key, f"{key} = {value!r}", "true or false", name)
        flags[key] = value
    catch_up = entry.get("catch_up_days", 3)
    if isinstance(catch_up, bool) or not isinstance(catch_up, int) or not 0 <= catch_up <= 365:
        where.fail(number, "catch_up_days", f"catch_up_days = {catch_up!r}", "0 to 365", name)
    coupon_days = entry.get("coupon_days", 14)
    if (
        isinstance(coupon_days, bool)
        or not isinstance(coupon_days, int)
        or not 1 <= coupon_days <= 3650
    ):
        where.fail(number, "coupon_days", f"coupon_days = {coupon_days!r}", "1 to 3650 days", name)
    auto_winner = _auto_winner(entry.get("auto_winner"), number, where, name, trigger, variants)
    if flags["transactional"] and trigger.kind != "post_purchase":
        # a transactional message skips caps, quiet hours and marketing opt-outs: only a
        # message about an order the customer placed may
        where.fail(
            number,
            "transactional",
            f"a {trigger.kind} campaign cannot be transactional (only messages about an "
            "order are: trigger post_purchase)",
            "transactional = false",
            name,
        )
    return Campaign(
        name=name,
        trigger=trigger,
        channel=channel,
        variants=variants,
        audience=audience,
        caps=caps,
        control_share=float(share),
        transactional=flags["transactional"],
        enabled=flags["enabled"],
        description=str(entry.get("description", "")),
        catch_up_days=catch_up,
        coupon_days=coupon_days,
        auto_winner=auto_winner,
        line=where.line_of(number, "name"),
    )


def _auto_winner(
    raw: Any,
    number: int,
    where: _Locator,
    name: str,
    trigger: Trigger,
    variants: tuple[Variant, ...],
) -> AutoWinner | None:
    if raw is None:
        return None
    example = '{ test_share = 0.2, deadline_hours = 24, metric = "clicks" }'
    if not isinstance(raw, dict) or "test_share" not in raw or set(raw) - _AUTO_WINNER_KEYS:
        where.fail(number, "auto_winner", f"auto_winner = {raw!r}", example, name)
    if trigger.kind != "broadcast":
        where.fail(
            number,
            "auto_winner",
            "auto_winner is for a broadcast",
            'trigger.kind = "broadcast"',
            name,
        )
    if len(variants) < 2:
        where.fail(number, "auto_winner", "auto_winner needs two variants or more", example, name)
    share = raw["test_share"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        where.fail(number, "auto_winner", f"test_share = {share!r}", "a share in (0, 1)", name)
    hours = raw.get("deadline_hours", 24)
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 1 <= hours <= 720:
        where.fail(number, "auto_winner", f"deadline_hours = {hours!r}", "1 to 720 hours", name)
    metric = raw.get("metric", "clicks")
    if metric not in WINNER_METRICS:
        where.fail(number, "auto_winner", f"metric = {metric!r}", " or ".join(WINNER_METRICS), name)
    return AutoWinner(float(share), float(hours), str(metric))


def _trigger(raw: Any, number: int, where: _Locator, name: str) -> Trigger:
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict) or "kind" not in raw:
        where.fail(number, "trigger", "no trigger", '{ kind = "overdue", factor = 1.5 }', name)
    kind = raw["kind"]
    if kind not in TRIGGERS:
        where.fail(number, "trigger", f"unknown trigger {kind!r}", ", ".join(TRIGGERS), name)
    allowed = TRIGGER_FIELDS[kind]
    options = dict(TRIGGER_DEFAULTS.get(kind, {}))
    for key, value in raw.items():
        if key == "kind":
            continue
        if key not in allowed:
            expected = ", ".join(allowed) or "no options"
            where.fail(number, "trigger", f"trigger {kind} has no option {key!r}", expected, name)
        if isinstance(value, bool) or not isinstance(value, allowed[key]):
            where.fail(
                number, "trigger", f"trigger option {key} = {value!r}", OPTION_EXAMPLES[key], name
            )
        options[key] = value
    if kind == "overdue" and not options["factor"] > 0:
        where.fail(number, "trigger", "overdue factor must be above 0", "e.g. 1.5", name)
    if kind in ("cart_abandoned", "browse_abandoned") and not 0 < options["hours"] <= 720:
        where.fail(number, "trigger", f"{kind} hours out of range", "above 0, at most 720", name)
    if kind == "post_purchase" and not 0 <= options["days"] <= 3650:
        where.fail(number, "trigger", "post_purchase days out of range", "0 to 3650", name)
    if kind == "churn_risk":
        levels = options["levels"]
        if not levels or any(level not in RISK_LEVELS for level in levels):
            where.fail(
                number, "trigger", f"churn_risk levels {levels!r}", ", ".join(RISK_LEVELS), name
            )
        options["levels"] = tuple(levels)
    if kind in ("segment_entered", "segment_left"):
        if "segment" not in raw:
            where.fail(number, "trigger", f"{kind} needs segment", 'segment = "At Risk"', name)
        _check_segments([options["segment"]], number, where, name, key="trigger")
    if kind in ("tier_entered", "tier_left") and not str(options.get("tier", "")).strip():
        where.fail(number, "trigger", f"{kind} needs tier", 'tier = "Gold"', name)
    if kind == "complaint":
        topics = options.get("topics", [])
        if not all(isinstance(t, str) and t.strip() for t in topics):
            where.fail(
                number,
                "trigger",
                f"complaint topics {topics!r}",
                'e.g. ["delivery", "damaged"]',
                name,
            )
        options["topics"] = tuple(t.strip() for t in topics)
    if kind == "broadcast":
        if "at" not in raw:
            where.fail(number, "trigger", "a broadcast needs at", 'at = "2025-12-01T10:00"', name)
        at = options["at"]
        try:
            moment = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at))
        except ValueError:
            where.fail(number, "trigger", f"broadcast at = {at!r}", "an ISO date-time", name)
            raise AssertionError from None  # unreachable: fail raises
        options["at"] = moment.replace(tzinfo=None) if moment.tzinfo is None else moment
    return Trigger(kind, options)


def _variants(
    entry: dict[str, Any], number: int, where: _Locator, name: str
) -> tuple[Variant, ...]:
    from retain.campaigns.templates import compile_template

    raw = entry.get("variants")
    if raw is None:
        raw = [{"name": "a", **{k: entry[k] for k in ("subject", "text", "html") if k in entry}}]
    elif any(k in entry for k in ("subject", "text", "html")):
        where.fail(
            number, "variants", "both variants and a subject or text", "one or the other", name
        )
    if not isinstance(raw, list) or not raw:
        where.fail(
            number, "variants", "variants must be a list of tables", "[[campaign.variants]]", name
        )
    variants: list[Variant] = []
    for item in raw:
        if not isinstance(item, dict):
            where.fail(
                number, "variants", "a variant must be a table", "{ name, subject, text }", name
            )
        unknown = set(item) - _VARIANT_KEYS
        if unknown:
            key = sorted(unknown)[0]
            where.fail(
                number,
                key,
                f"unknown variant field {key!r}",
                ", ".join(sorted(_VARIANT_KEYS)),
                name,
            )
        for key in ("subject", "text"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                where.fail(number, key, f"no {key}", f'{key} = "..." (a Jinja2 template)', name)
        for key in ("subject", "text", "html"):
            if item.get(key) is not None:
                problem = compile_template(str(item[key]))
                if problem:
                    where.fail(number, key, f"{key} template: {problem}", "a Jinja2 template", name)
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            where.fail(number, "weight", f"variant weight = {weight!r}", "a number above 0", name)
        delay = item.get("delay_hours", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 720:
            where.fail(number, "delay_hours", f"delay_hours = {delay!r}", "0 to 720 hours", name)
        variant_name = str(item.get("name", chr(ord("a") + len(variants))))
        if variant_name in ARMS:
            where.fail(
                number,
                "name",
                f"variant name {variant_name!r} is the name of the arm with no message",
                "another name",
                name,
            )
        if any(v.name == variant_name for v in variants):
            where.fail(
                number, "name", f"variant name {variant_name!r} used twice", "unique names", name
            )
        variants.append(
            Variant(
                variant_name,
                item["subject"],
                item["text"],
                item.get("html"),
                float(weight),
                float(delay),
            )
        )
    return tuple(variants)


def _audience(raw: Any, number: int, where: _Locator, name: str) -> Audience:
    if not isinstance(raw, dict):
        where.fail(number, "audience", "audience must be a table", "{ segments = [...] }", name)
    unknown = set(raw) - _AUDIENCE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        where.fail(
            number, key, f"unknown audience field {key!r}", ", ".join(sorted(_AUDIENCE_KEYS)), name
        )
    values: dict[str, Any] = {}
    for key in ("segments", "churn_risk"):
        if key in raw:
            items = raw[key]
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                where.fail(
                    number, key, f"audience {key} must be a list of names", '["Loyal"]', name
                )
            if key == "churn_risk" and any(i not in RISK_LEVELS for i in items):
                where.fail(number, key, f"churn_risk {items!r}", ", ".join(RISK_LEVELS), name)
            if key == "segments":
                _check_segments(items, number, where, name)
            values[key] = tuple(items)
    for key in ("min_p_alive", "min_clv"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                where.fail(number, key, f"{key} = {value!r}", "a number", name)
            if key == "min_p_alive" and not 0 <= value <= 1:
                where.fail(number, key, f"{key} = {value!r}", "a probability in [0, 1]", name)
            values[key] = float(value)
    for key in ("min_orders", "max_orders"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                where.fail(number, key, f"{key} = {value!r}", "a whole number >= 0", name)
            values[key] = value
    return Audience(**values)


def _check_segments(
    items: list[str], number: int, where: _Locator, name: str, key: str = "segments"
) -> None:
    from retain.segments import load_rules

    known = list(load_rules().table()["segment"])
    for item in items:
        if item not in known:
            where.fail(number, key, f"unknown segment {item!r}", ", ".join(known), name)
