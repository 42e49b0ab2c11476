"""The loyalty rules: a TOML file (the default ships as ``default_rules.toml`` beside
this module; its comments document every key). :func:`load_rules` reads and checks a
file; each mistake names the file, the line and the key, and what was expected."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from retain.errors import DataError

DEFAULT_RULES_PATH = Path(str(resources.files("retain.loyalty") / "default_rules.toml"))
BASES = ("spend", "points")


@dataclass(frozen=True)
class Tier:
    """A VIP tier: reached at ``threshold`` (net spend over 12 months, or points earned
    over 12 months), with the benefits campaigns and the shop read."""

    name: str
    threshold: float
    discount: float = 0.0
    free_shipping: bool = False
    early_access: bool = False

    def benefits(self) -> dict[str, Any]:
        return {
            "discount": self.discount,
            "free_shipping": self.free_shipping,
            "early_access": self.early_access,
        }

    def price(self, price: float | None) -> float | None:
        """A price after the tier's discount, to the cent."""
        return member_price(price, self.discount)


def member_price(price: float | None, discount: float | None) -> float | None:
    """``price`` less ``discount`` percent, to the cent (None without a price)."""
    if price is None:
        return None
    return round(price * (1 - (discount or 0) / 100), 2)


@dataclass(frozen=True)
class LoyaltyRules:
    """Every rule of the programme (see ``default_rules.toml`` for their meaning)."""

    per_unit: float = 1.0
    per_order: int = 0
    value: float = 0.01
    pending_days: int = 30
    expire_months: int = 12
    birthday: int = 100
    review: int = 50
    basis: str = "spend"
    grace_days: int = 30
    tiers: tuple[Tier, ...] = ()
    reward: int = 5000
    friend_reward: int = 0
    max_per_year: int = 10
    code_prefix: str = "REF"
    source: str = "default"
    text: str = ""

    def tier(self, name: str | None) -> Tier | None:
        return next((t for t in self.tiers if t.name == name), None)

    def bonus(self, reason: str) -> int:
        """The points of a bonus a request may give, by its reason (:data:`BONUSES`)."""
        if reason not in BONUSES:
            raise DataError("no such bonus", value=reason, expected=f"one of {', '.join(BONUSES)}")
        return int(getattr(self, reason))


BONUSES = ("review",)
"""The bonuses a request may give (the build gives the birthday bonus itself)."""

# section -> key -> (kind, low, high): kind "int", "number", "bool", "text", or a choice tuple
_KEYS: dict[str, dict[str, tuple[Any, float | None, float | None]]] = {
    "points": {
        "per_unit": ("number", 0, 1e6),
        "per_order": ("int", 0, 1e9),
        "value": ("number", 0, 1e6),
        "pending_days": ("int", 0, 3650),
        "expire_months": ("int", 0, 600),
    },
    "bonus": {"birthday": ("int", 0, 1e9), "review": ("int", 0, 1e9)},
    "tiers": {"basis": (BASES, None, None), "grace_days": ("int", 0, 3650)},
    "referrals": {
        "reward": ("int", 0, 1e9),
        "friend_reward": ("int", 0, 1e9),
        "max_per_year": ("int", 0, 1e6),
        "code_prefix": ("text", None, None),
    },
}
_TIER_KEYS: dict[str, tuple[Any, float | None, float | None]] = {
    "name": ("text", None, None),
    "threshold": ("number", 0, 1e12),
    "discount": ("number", 0, 100),
    "free_shipping": ("bool", None, None),
    "early_access": ("bool", None, None),
}


class _Where:
    """Lines of the file's sections and keys, for the messages."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, section: str, key: str | None = None, index: int = 0) -> int | None:
        pattern = (
            rf"^\s*\[\[\s*{section}\s*\]\]" if section == "tier" else rf"^\s*\[\s*{section}\s*\]"
        )
        starts = [i for i, line in enumerate(self.lines) if re.match(pattern, line)]
        if len(starts) <= index:
            return None
        start = starts[index]
        if key is None:
            return start + 1
        for i in range(start + 1, len(self.lines)):
            if re.match(r"^\s*\[", self.lines[i]):
                break
            if re.match(rf"^\s*{re.escape(key)}\s*=", self.lines[i]):
                return i + 1
        return start + 1

    def fail(
        self, section: str, key: str | None, message: str, expected: str, index: int = 0
    ) -> DataError:
        line = self.line(section, key, index)
        at = f"line {line}: " if line else ""
        name = f"[[tier]] {index + 1}" if section == "tier" else f"[{section}]"
        field = f"{name} {key}" if key else name
        return DataError(f"{at}{field}: {message}", file=self.path, expected=expected)


def _value(raw: Any, spec: tuple[Any, float | None, float | None], where: _Where, *at: Any) -> Any:
    kind, low, high = spec
    section, key, index = at
    if isinstance(kind, tuple):
        if raw not in kind:
            raise where.fail(section, key, f"{raw!r}", " or ".join(map(repr, kind)), index)
        return raw
    if kind == "bool":
        if not isinstance(raw, bool):
            raise where.fail(section, key, f"{raw!r}", "true or false", index)
        return raw
    if kind == "text":
        if not isinstance(raw, str) or not raw.strip():
            raise where.fail(section, key, f"{raw!r}", "a text that is not empty", index)
        return raw.strip()
    whole = kind == "int"
    if isinstance(raw, bool) or not isinstance(raw, int if whole else int | float):
        what = "a whole number" if whole else "a number"
        raise where.fail(section, key, f"{raw!r}", what, index)
    if raw != raw or not low <= raw <= high:  # type: ignore[operator]
        raise where.fail(section, key, f"{raw!r}", f"from {low:g} to {high:g}", index)
    return int(raw) if whole else float(raw)


def parse_rules(text: str, path: str = "<loyalty rules>") -> LoyaltyRules:
    """:func:`load_rules` of the text of a file (``path`` names it in errors)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"not valid TOML ({exc})", file=path) from None
    where = _Where(path, text)
    values: dict[str, Any] = {}
    for section, body in raw.items():
        if section == "tier":
            continue
        if section not in _KEYS:
            known = ", ".join(f"[{s}]" for s in _KEYS)
            raise where.fail(section, None, "unknown table", f"{known} and [[tier]]")
        if not isinstance(body, dict):
            raise where.fail(section, None, "must be a table", f"[{section}]")
        for key, value in body.items():
            spec = _KEYS[section].get(key)
            if spec is None:
                raise where.fail(section, key, "unknown key", ", ".join(_KEYS[section]))
            values[key] = _value(value, spec, where, section, key, 0)
    tiers: list[Tier] = []
    entries = raw.get("tier", [])
    if not isinstance(entries, list):
        raise where.fail("tier", None, "must be [[tier]] tables", "[[tier]] name = ...")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise where.fail(
                "tier", None, f"{entry!r} is not a table", '[[tier]] name = "Gold"', index
            )
        for key in ("name", "threshold"):
            if key not in entry:
                raise where.fail("tier", None, f"no {key}", f"{key} = ...", index)
        fields = {}
        for key, value in entry.items():
            spec = _TIER_KEYS.get(key)
            if spec is None:
                raise where.fail("tier", key, "unknown key", ", ".join(_TIER_KEYS), index)
            fields[key] = _value(value, spec, where, "tier", key, index)
        tier = Tier(**fields)
        if tiers and tier.threshold <= tiers[-1].threshold:
            raise where.fail(
                "tier",
                "threshold",
                f"{tier.threshold:g} is not above {tiers[-1].name}'s {tiers[-1].threshold:g}",
                "tiers from the lowest threshold to the highest",
                index,
            )
        if any(t.name.lower() == tier.name.lower() for t in tiers):
            raise where.fail("tier", "name", f"{tier.name!r} used twice", "unique names", index)
        tiers.append(tier)
    prefix = values.get("code_prefix", "REF")
    if not re.fullmatch(r"[A-Za-z0-9]{1,12}", prefix):
        raise where.fail("referrals", "code_prefix", f"{prefix!r}", "1 to 12 letters and digits")
    values["code_prefix"] = prefix.upper()
    return LoyaltyRules(**values, tiers=tuple(tiers), source=path, text=text)


def load_rules(path: str | Path | None = None) -> LoyaltyRules:
    """The rules of the file at ``path`` (default: the shipped ``default_rules.toml``)."""
    if path is None:
        rules = parse_rules(DEFAULT_RULES_PATH.read_text(), "default rules")
        return rules
    file = Path(path)
    if not file.is_file():
        raise DataError("no such file" if not file.exists() else "not a file", file=str(file))
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", file=str(file)) from None
    return parse_rules(text, str(file))
