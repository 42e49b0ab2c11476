"""The store's settings: the values every command and the service default to.

A store keeps its settings in the ``settings`` table; an option given to a command
(or a keyword given to a function) still wins over them. Each value is checked
here, once, whether it comes from ``retain settings set``, a function's keyword or
the table itself.

=============  ===================================================  ==============================
setting        what it holds                                        when not set
=============  ===================================================  ==============================
currency       reporting currency, an ISO 4217 code (EUR, USD)      USD
margin         fraction of net revenue kept, in (0, 1]              the margin of the last
                                                                    ``retain score``, else 1
discount_rate  discount rate of CLV per year, in [0, 1)             0.1
as_of          observation date YYYY-MM-DD, or ``live`` (the wall   the day of the last order
               clock, today in ``time_zone``)
window_days    activity window in days, or ``auto`` (the store's    auto
               purchase rhythm, see :mod:`retain.metrics`)
time_zone      IANA time zone of the store (Europe/Paris)           UTC
max_amount     largest amount accepted at ingest, per order,        1,000,000,000 (1e9)
               line or spend row, reporting currency (plus or
               minus); a larger or non-finite one is quarantined
smtp_url       the SMTP server of campaigns' e-mail (shown without  RETAIN_SMTP_URL
               its password; RETAIN_SMTP_URL wins)
erase_orders   what erasing a customer does with their orders:      unlink
               ``unlink`` (kept for the totals under an anonymous
               id) or ``remove`` (see :mod:`retain.erase`)
=============  ===================================================  ==============================

An ingest given ``as_of`` (``retain ingest --as-of``) sets ``as_of`` unless it was
set by hand; an ingest without one clears what an earlier ingest set, so the store
is live again for single orders (``POST /api/orders`` checks dates against the
clock). An ingest given a ``currency`` sets ``currency`` the same way.

The observation date has one resolver, :func:`observation_day`: an explicit
``as_of``, else the setting, else the day of the last order. Dates are days in
UTC; ``time_zone`` decides which day "today" is for a live store (periods are
still calendar periods in UTC).

One name per idea: the observation date is ``as_of`` in every command (``--as-of``),
route and function that takes one; :func:`retain.scoring.fit_store`,
:func:`~retain.scoring.score_store` and :func:`~retain.scoring.score_customers`
still accept their old keyword ``observation_end`` with a DeprecationWarning.
:func:`retain.summarize` keeps ``observation_end``, as do a fitted model's
``observation_end_`` and ``FitReport.observation_end``: the end of the data a model
was fitted on, saved with every model and fit. A discount rate is per year
everywhere except :func:`retain.metrics.formula_clv`, the textbook formula, which
takes the rate per period.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retain.errors import ArgumentError, DataError
from retain.store import Store

if TYPE_CHECKING:
    import pandas as pd

LIVE = "live"
"""The ``as_of`` setting of a store that follows the wall clock."""

AUTO = "auto"
"""The ``window_days`` setting that takes the activity window from the store's rhythm."""

DEFAULT = "default"
"""The value that removes a setting: ``retain settings set margin default``."""

# where a stored value came from
BY_HAND, BY_INGEST = "set", "ingest"

# a century: longer activity windows overflow date arithmetic
MAX_WINDOW_DAYS = 36_500
# the shortest window any period allows (a month; see retain.metrics)
MIN_WINDOW_DAYS = 30

DEFAULT_MAX_AMOUNT = 1e9
"""The ``max_amount`` setting when not set, reporting currency: no single order, order
line or day's spend of a business this tool serves comes near a billion, while a
value of 1e32 or more breaks exact sums (DECIMAL(38, 6)) and 1e308 overflows to inf."""

# the largest max_amount one can set: a store's total of a billion such orders still
# sums exactly in DECIMAL(38, 6), whose limit is 1e32
MAX_MAX_AMOUNT = 1e15


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


# -- checks: one per setting -------------------------------------------------------------------
def check_currency(value: object) -> str:
    """The reporting currency as an upper-case ISO 4217 code."""
    text = str(value).strip().upper() if isinstance(value, str) else ""
    if not re.fullmatch(r"[A-Z]{3}", text):
        raise ArgumentError(
            f"setting currency: got {value!r}, expected a three-letter ISO 4217 code such as "
            "USD or EUR"
        )
    return text


def _in_range(
    value: object, within: Callable[[float], bool], message: str, expected: str, percent: bool
) -> float:
    """``value`` as a float when it is a number that ``within`` accepts, else a
    :class:`DataError` with ``message`` and ``expected``; with ``percent``, a number
    above 1 is taken for a percentage and the error says how to write it."""
    number = float(value) if _is_number(value) else None  # type: ignore[arg-type]
    if number is None or not within(number):
        hint = (
            f" (for {value}% write {number / 100:g})"
            if percent and number is not None and number >= 1
            else ""
        )
        raise DataError(f"{message}{hint}", value=value, expected=expected)
    return number


def check_margin(margin: object) -> float:
    """The margin as a fraction of net revenue in (0, 1]."""
    return _in_range(
        margin,
        lambda m: 0 < m <= 1,
        "margin must be a fraction of net revenue",
        "a number in (0, 1], e.g. 0.3 for 30%",
        percent=True,
    )


def check_discount_rate(rate: object) -> float:
    """The discount rate of CLV per year, in [0, 1)."""
    return _in_range(
        rate,
        lambda r: 0 <= r < 1,
        "discount rate must be a fraction per year",
        "a number in [0, 1), e.g. 0.1 for 10% a year",
        percent=True,
    )


def per_period_rate(rate_per_year: float, months: int) -> float:
    """The discount rate per period of ``months`` months equivalent to ``rate_per_year``:
    (1 + r)^(months / 12) - 1, so that 12 monthly discounts compound to one yearly."""
    return float((1.0 + check_discount_rate(rate_per_year)) ** (months / 12) - 1.0)


def parse_as_of(value: str | dt.date | dt.datetime | pd.Timestamp) -> dt.datetime:
    """``value`` (a date or a time, as text or object) as a naive UTC time.

    A time with a zone is converted to UTC; one without is taken as UTC. Raises
    :class:`~retain.errors.DataError` when ``value`` is not a date.
    """
    unreadable = DataError(
        "unreadable observation date", value=value, expected="a date as YYYY-MM-DD"
    )
    moment: dt.datetime | None = None
    if isinstance(value, dt.datetime) and type(value) is dt.datetime:
        moment = value
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        moment = dt.datetime.combine(value, dt.time())
    elif isinstance(value, str):
        # ISO 8601 (2025-10-02, 2025-10-02T10:00:00+02:00) without pandas, which a
        # command that only stores files need not load
        with contextlib.suppress(ValueError):
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment is None:  # other spellings ("Oct 2, 2025"), pandas' and NumPy's times
        import pandas as pd

        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise unreadable from None
        if pd.isna(ts):
            raise unreadable
        moment = ts.to_pydatetime()
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def check_as_of(value: object) -> dt.date | str:
    """The ``as_of`` setting: a date, or ``live``."""
    if isinstance(value, str) and value.strip().lower() == LIVE:
        return LIVE
    try:
        return parse_as_of(value).date()  # type: ignore[arg-type]
    except DataError:
        raise ArgumentError(
            f"setting as_of: got {value!r}, expected a date as YYYY-MM-DD or {LIVE!r} "
            "(the wall clock)"
        ) from None


def check_window_days(value: object) -> int | None:
    """The ``window_days`` setting: whole days (None for ``auto``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    days: object = value
    if isinstance(value, str):
        try:
            days = int(value.strip())
        except ValueError:
            days = value
    if isinstance(days, bool) or not isinstance(days, int):
        raise ArgumentError(
            f"setting window_days: got {value!r}, expected a whole number of days or "
            f"{AUTO!r} (the store's purchase rhythm)"
        )
    if not MIN_WINDOW_DAYS <= days <= MAX_WINDOW_DAYS:
        raise ArgumentError(
            f"setting window_days: got {days}, expected {MIN_WINDOW_DAYS} to "
            f"{MAX_WINDOW_DAYS:,} days (a window shorter than a month counts monthly buyers "
            f"as lapsed) or {AUTO!r}"
        )
    return days


def check_global_control(value: object) -> float:
    """The share of customers held out of every marketing message, in [0, 0.5]."""
    return _in_range(
        value,
        lambda share: 0 <= share <= 0.5,
        "global_control must be the share of customers held out of all marketing",
        "a share in [0, 0.5], e.g. 0.05 for 5%",
        percent=True,
    )


def check_smtp_url(value: object) -> str:
    """An SMTP URL, ``smtp://[user:pass@]host:port[?starttls=1]`` (or ``smtps://``)."""
    from retain.campaigns.channels import parse_smtp_url  # the one parser of these URLs

    text = str(value).strip()
    parse_smtp_url(text)
    return text


def masked(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***``: how a setting holding one is shown."""
    if not url:
        return url
    return re.sub(r"^(\w+://[^:/@]*:)[^@]*@", r"\1***@", url)


def check_time_zone(value: object) -> str:
    """The store's time zone: an IANA name."""
    text = value.strip() if isinstance(value, str) else ""
    try:
        if not text:
            raise ValueError
        zoneinfo.ZoneInfo(text)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ArgumentError(
            f"setting time_zone: got {value!r}, expected an IANA time zone such as UTC, "
            "Europe/Paris or America/New_York"
        ) from None
    return text


def check_erase_orders(value: object) -> str:
    """The ``erase_orders`` setting: ``unlink`` or ``remove``."""
    text = str(value).strip().lower()
    if text not in ("unlink", "remove"):
        raise ArgumentError(
            f"erase_orders: got {value!r}, expected unlink (keep the orders under an "
            "anonymous id) or remove (delete them)"
        )
    return text


def check_max_amount(value: object) -> float:
    """The ``max_amount`` setting: the largest absolute amount accepted at ingest, in the
    reporting currency, above 0 and at most :data:`MAX_MAX_AMOUNT`."""
    return _in_range(
        value,
        lambda a: 0 < a <= MAX_MAX_AMOUNT,
        "max_amount must be the largest amount an order, line or spend row may hold",
        "a number above 0 and at most 1e15, in the reporting currency, e.g. 1e9",
        percent=False,
    )


def _number(name: str, check: Callable[[object], float]) -> Callable[[object], float]:
    """A check of a number given as text or as a number, with the setting's name in its error."""

    def parse(value: object) -> float:
        number: object = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = value
        try:
            return check(number)
        except DataError as exc:
            raise ArgumentError(f"setting {name}: {exc}") from None

    return parse


@dataclass(frozen=True)
class Setting:
    """One setting: its ``name``, what it holds (``help``), what it takes (``expected``),
    how a value is checked (``check``) and what holds when it is not set (``default``,
    and ``default_text`` in words)."""

    name: str
    help: str
    expected: str
    check: Callable[[object], Any]
    default: Any
    default_text: str


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "currency",
            "reporting currency: every amount is converted to it",
            "a three-letter ISO 4217 code (USD, EUR)",
            check_currency,
            "USD",
            "USD",
        ),
        Setting(
            "margin",
            "fraction of net revenue kept, applied to every CLV",
            "a number in (0, 1], e.g. 0.3 for 30%",
            _number("margin", check_margin),
            None,
            "the margin of the last `retain score`, else 1",
        ),
        Setting(
            "discount_rate",
            "discount rate of CLV, per year",
            "a number in [0, 1), e.g. 0.1 for 10% a year",
            _number("discount_rate", check_discount_rate),
            0.1,
            "0.1",
        ),
        Setting(
            "as_of",
            "observation date: orders after it are ignored, and quarantined at ingest",
            f"a date YYYY-MM-DD, or {LIVE} (the wall clock)",
            check_as_of,
            None,
            "the day of the last order",
        ),
        Setting(
            "window_days",
            "activity window: a customer is someone who ordered in the last N days",
            f"{MIN_WINDOW_DAYS} to {MAX_WINDOW_DAYS:,} days, or {AUTO} (the store's rhythm)",
            check_window_days,
            None,
            f"{AUTO}: from the store's purchase rhythm",
        ),
        Setting(
            "time_zone",
            "the store's time zone: which day is today for a live store",
            "an IANA time zone (UTC, Europe/Paris)",
            check_time_zone,
            "UTC",
            "UTC",
        ),
        Setting(
            "smtp_url",
            "the SMTP server campaigns send e-mail through (RETAIN_SMTP_URL, when set, wins); "
            "shown without its password",
            "smtp://[user:pass@]host:port[?starttls=1], or smtps:// for TLS",
            check_smtp_url,
            None,
            "none: RETAIN_SMTP_URL",
        ),
        Setting(
            "global_control",
            "share of customers held out of every marketing message, to measure what "
            "marketing adds (retain experiments); set once: changing it mixes the group",
            "a share in [0, 0.5], e.g. 0.05 for 5%",
            _number("global_control", check_global_control),
            0.0,
            "0: no one held out",
        ),
        Setting(
            "erase_orders",
            "what erasing a customer (retain erase, Shopify's customers/redact) does with "
            "their orders: unlink keeps them for the revenue totals under an anonymous id, "
            "remove deletes them",
            "unlink or remove",
            check_erase_orders,
            "unlink",
            "unlink",
        ),
        Setting(
            "max_amount",
            "largest amount accepted at ingest (order amounts, line prices and quantities, "
            "spend), reporting currency: a larger one, or inf or nan, is quarantined",
            "a number above 0, at most 1e15, e.g. 1e9",
            _number("max_amount", check_max_amount),
            DEFAULT_MAX_AMOUNT,
            "1e9 (1,000,000,000)",
        ),
    )
}


def _setting(name: str) -> Setting:
    if name not in SETTINGS:
        raise ArgumentError(f"no setting {name!r}: the settings are {', '.join(SETTINGS)}")
    return SETTINGS[name]


def _text(value: Any) -> str:
    """A checked value as the table keeps it."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """A store's settings, checked: the value of each (None where :data:`SETTINGS` says
    what holds instead) and where it came from (``sources``: ``set`` by hand, ``ingest``,
    or ``default``)."""

    currency: str = "USD"
    margin: float | None = None
    discount_rate: float = 0.1
    as_of: dt.date | str | None = None
    window_days: int | None = None
    time_zone: str = "UTC"
    max_amount: float = DEFAULT_MAX_AMOUNT
    smtp_url: str | None = None
    global_control: float = 0.0
    erase_orders: str = "unlink"
    sources: dict[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")


def _stored(store: Store) -> dict[str, tuple[str, str]]:
    """name -> (value, source) as the table holds them; empty for a store without it."""
    if not store.has_table("settings"):
        return {}
    rows = store.con.execute("SELECT name, value, source FROM settings").fetchall()
    return {str(name): (str(value), str(source)) for name, value, source in rows}


def load_settings(store: Store) -> Settings:
    """The store's :class:`Settings`. A stored value that no longer passes its check is
    a :class:`~retain.errors.DataError` naming the setting and how to change it."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (text, source) in _stored(store).items():
        if name not in SETTINGS:
            continue
        try:
            values[name] = SETTINGS[name].check(text)
        except ArgumentError as exc:
            raise DataError(
                f"the store {store.path} holds a bad setting ({exc}); change it with "
                f"`retain settings set {name} VALUE`"
            ) from None
        sources[name] = source
    return Settings(**values, sources=sources)


def set_setting(store: Store, name: str, value: object, *, source: str = BY_HAND) -> Any:
    """Check ``value`` and keep it as the setting ``name``; ``default`` (or None) removes
    the setting. Returns the value as checked. Raises
    :class:`~retain.errors.ArgumentError` for an unknown setting or a bad value."""
    setting = _setting(name)
    if value is None or (isinstance(value, str) and value.strip().lower() == DEFAULT):
        clear_setting(store, name)
        return setting.default
    checked = setting.check(value)
    if name == "global_control":
        _hold_global_control(store, float(checked))
    if checked is None:  # "auto" is the default
        clear_setting(store, name)
        return None
    store.con.execute(
        "INSERT OR REPLACE INTO settings VALUES (?, ?, ?, now()::TIMESTAMP)",
        [name, _text(checked), source],
    )
    return checked


def _hold_global_control(store: Store, share: float) -> None:
    """Refuse to change the global control group's size once customers were held out
    in it: members would move between the arms of running experiments."""
    current = load_settings(store).global_control
    if share == current or not store.has_table("campaign_outbox"):
        return
    held = store.con.execute(
        "SELECT count(DISTINCT customer_id) FROM campaign_outbox "
        "WHERE status = 'control' AND variant = 'global control'"
    ).fetchall()[0][0]
    if held:
        raise ArgumentError(
            f"setting global_control: it is {current:g} and {held:,} customers were held out "
            "in it; it is set once per store, so that the group stays the same people"
        )


def clear_setting(store: Store, name: str) -> None:
    """Remove the setting ``name``: the default holds again."""
    _setting(name)
    if name == "global_control":
        _hold_global_control(store, 0.0)
    if store.has_table("settings"):
        store.con.execute("DELETE FROM settings WHERE name = ?", [name])


def record_from_ingest(store: Store, name: str, value: object | None) -> None:
    """What an ingest says about ``name`` (``as_of`` or ``currency``): kept unless the
    setting was set by hand; None clears what an earlier ingest set."""
    current = _stored(store).get(name)
    if current is not None and current[1] == BY_HAND:
        return
    if value is None:
        if current is not None:
            clear_setting(store, name)
        return
    set_setting(store, name, value, source=BY_INGEST)


def settings_table(store: Store) -> list[dict[str, Any]]:
    """Every setting as a row: ``name``, ``value`` (as checked, None when not set),
    ``shown`` (the value in words, or what holds instead), ``source`` (``set``,
    ``ingest`` or ``default``), ``help``, ``expected``."""
    settings = load_settings(store)
    rows = []
    for name, setting in SETTINGS.items():
        value = getattr(settings, name)
        source = settings.source(name)
        if name == "smtp_url":  # its password stays in the store
            value = masked(value)
        shown = setting.default_text if source == "default" else _text(value)
        rows.append(
            {
                "name": name,
                "value": value.isoformat() if isinstance(value, dt.date) else value,
                "shown": shown,
                "source": source,
                "help": setting.help,
                "expected": setting.expected,
            }
        )
    return rows


# -- resolvers: an explicit value, else the setting, else the rule -------------------------------
def today(store: Store) -> dt.date:
    """Today in the store's time zone."""
    zone = zoneinfo.ZoneInfo(load_settings(store).time_zone)
    return dt.datetime.now(zone).date()


def check_not_before_first_order(day: dt.date, first: dt.date) -> None:
    """Raise :class:`~retain.errors.DataError` when the observation ``day`` is before ``first``,
    the day of the first order."""
    if day < first:
        raise DataError(
            f"the observation date {day} is before the first order ({first})",
            expected=f"a date on or after {first}",
        )


def observation_day(
    store: Store, as_of: str | dt.date | dt.datetime | pd.Timestamp | None = None
) -> dt.date:
    """The observation day, the one rule of every command: ``as_of`` when given (a date,
    or ``live``), else the store's ``as_of`` setting, else the day of the last order.
    A day before the first order is a :class:`~retain.errors.DataError`; so is a store
    without orders."""
    rows = store.con.execute(
        "SELECT CAST(min(ordered_at) AS DATE), CAST(max(ordered_at) AS DATE) FROM orders"
    ).fetchall()
    first, last = rows[0] if rows else (None, None)
    if last is None:
        raise DataError(
            f"the store {store.path} holds no orders yet: run `retain ingest FILE --db {store.path}`"
        )
    chosen: dt.date | str | None
    if as_of is None:
        chosen = load_settings(store).as_of
    elif isinstance(as_of, str) and as_of.strip().lower() == LIVE:
        chosen = LIVE
    else:
        chosen = parse_as_of(as_of).date()
    if chosen is None:
        return last
    day = today(store) if chosen == LIVE else chosen
    assert isinstance(day, dt.date)
    check_not_before_first_order(day, first)
    return day


def observation_time(store: Store) -> dt.datetime | None:
    """The moment single orders and file ingests are checked against (naive UTC): the end
    of the ``as_of`` day, the wall clock for ``live``, None when the setting is not set
    (the caller's own rule: the wall clock)."""
    value = load_settings(store).as_of
    if value is None:
        return None
    if value == LIVE:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert isinstance(value, dt.date)
    return dt.datetime.combine(value, dt.time.max)


def scored_margin(store: Store) -> float | None:
    """The margin of the last ``retain score`` (``score_basis.margin``), or None."""
    if not store.has_table("score_basis"):
        return None
    rows = store.con.execute("SELECT margin FROM score_basis LIMIT 1").fetchall()
    return None if not rows or rows[0][0] is None else float(rows[0][0])


def margin_and_source(store: Store, margin: float | None = None) -> tuple[float, str]:
    """The margin and where it came from: ``asked`` (``margin`` given, checked),
    ``setting``, ``scored`` (the last ``retain score``) or ``none`` (1)."""
    if margin is not None:
        return check_margin(margin), "asked"
    setting = load_settings(store).margin
    if setting is not None:
        return setting, "setting"
    scored = scored_margin(store)
    return (1.0, "none") if scored is None else (scored, "scored")


def resolve_margin(store: Store, margin: float | None = None) -> float:
    """``margin`` when given (checked), else the store's setting, else the margin of the
    last ``retain score``, else 1."""
    return margin_and_source(store, margin)[0]


def resolve_discount_rate(store: Store, discount_rate: float | None = None) -> float:
    """``discount_rate`` (per year) when given (checked), else the store's setting."""
    if discount_rate is not None:
        return check_discount_rate(discount_rate)
    return load_settings(store).discount_rate


def resolve_window_days(store: Store, window_days: int | None = None) -> int | None:
    """``window_days`` when given, else the store's setting; None: from the store's rhythm."""
    if window_days is not None:
        return window_days
    return load_settings(store).window_days


def resolve_max_amount(store: Store, max_amount: float | None = None) -> float:
    """``max_amount`` (reporting currency) when given (checked), else the store's setting."""
    if max_amount is not None:
        return check_max_amount(max_amount)
    return load_settings(store).max_amount


def resolve_currency(store: Store, currency: str | None = None) -> str:
    """``currency`` when given (checked), else the store's setting."""
    if currency is not None:
        return check_currency(currency)
    return load_settings(store).currency
