"""The rule table that names segments from RFM scores.

The rules live in a TOML file (the default ships as ``default_segments.toml``
next to this module; its header documents the format). :func:`load_rules`
reads and checks a file; :meth:`SegmentRules.grid` expands the rules of a
scheme into one row per combination of scores, which is what customers are
joined against: the first rule that matches a combination names its segment,
so every customer lands in exactly one.

Recency is not judged against other customers only: the ``[recency]`` section
caps the recency score by the customer's churn risk (which weighs their own
rhythm, the model's P(alive) and an absolute bound of days; see
:mod:`retain.segments.risk`). A customer at high risk in a store whose
customers are mostly old may rank among the most recent, but scores no more
than the cap, so no segment that says "recent" holds a customer the same page
calls lost.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from retain.errors import SchemaError

SCHEMES: dict[str, int] = {"quintiles": 5, "quartiles": 4}
CAPPED_RISKS = ("medium", "high", "lost")
"""Risk levels that cap the recency score (``[recency.<scheme>]`` of the rule file)."""
"""Scoring schemes and their number of score levels."""

DEFAULT_RULES_PATH = Path(str(resources.files("retain.segments") / "default_segments.toml"))
TOP_PRODUCTS = "{top_products}"


@dataclass(frozen=True)
class Segment:
    """A named segment and what its customers should get."""

    name: str
    description: str
    action: str
    offer: str
    rank: int
    valuable: bool


@dataclass(frozen=True)
class Rule:
    """Customers whose scores fall in every given inclusive range belong to ``segment``."""

    segment: str
    r: tuple[int, int] | None = None
    f: tuple[int, int] | None = None
    m: tuple[int, int] | None = None

    def matches(self, r: int, f: int, m: int) -> bool:
        return all(
            bounds is None or bounds[0] <= score <= bounds[1]
            for bounds, score in ((self.r, r), (self.f, f), (self.m, m))
        )


@dataclass(frozen=True)
class SegmentRules:
    """Segments (best first) and, per scheme, the ordered rules that assign them."""

    segments: tuple[Segment, ...]
    rules: dict[str, tuple[Rule, ...]]
    source: str = "default"
    recency_caps: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per scheme, the highest recency score at each risk level (missing: no cap)."""

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def segment(self, name: str) -> Segment:
        """The segment called ``name`` (case, spaces, dashes and apostrophes ignored)."""
        wanted = _slug(name)
        for segment in self.segments:
            if _slug(segment.name) == wanted:
                return segment
        raise SchemaError(f"no segment called {name!r}; the segments are: {', '.join(self.names)}")

    def grid(self, scheme: str = "quintiles") -> pd.DataFrame:
        """One row per (r_score, f_score, m_score) with the segment the rules give it."""
        levels = score_levels(scheme)
        rows = []
        for r, f, m in itertools.product(range(1, levels + 1), repeat=3):
            segment = next(rule.segment for rule in self.rules[scheme] if rule.matches(r, f, m))
            rows.append((r, f, m, segment))
        return pd.DataFrame(rows, columns=["r_score", "f_score", "m_score", "segment"])

    def caps(self, scheme: str = "quintiles") -> pd.DataFrame:
        """The recency caps of ``scheme``: one row per capped risk level, ``risk`` and ``cap``."""
        score_levels(scheme)
        caps = self.recency_caps.get(scheme, {})
        return pd.DataFrame({"risk": list(caps), "cap": [int(v) for v in caps.values()]}).astype(
            {"risk": "object", "cap": "int64"}
        )

    def unreachable(self, scheme: str = "quintiles") -> list[str]:
        """Segments no combination of scores reaches under ``scheme`` (earlier rules take all)."""
        reached = set(self.grid(scheme)["segment"])
        return [name for name in self.names if name not in reached]

    def table(self) -> pd.DataFrame:
        """The segments as a frame: segment, description, action, offer, rank, valuable, position."""
        return pd.DataFrame(
            {
                "segment": [s.name for s in self.segments],
                "description": [s.description for s in self.segments],
                "action": [s.action for s in self.segments],
                "offer": [s.offer for s in self.segments],
                "rank": [s.rank for s in self.segments],
                "valuable": [s.valuable for s in self.segments],
                "position": list(range(1, len(self.segments) + 1)),
            }
        )


def load_rules(path: str | Path | None = None) -> SegmentRules:
    """Read and check a segment rule file (TOML); ``None`` gives the shipped default.

    Parts the file leaves out (``segments``, ``quintiles``, ``quartiles``) come
    from the default file. Raises :class:`SchemaError` naming the file and the
    problem when a rule refers to an unknown segment, a range is out of bounds,
    or some combination of scores is matched by no rule.
    """
    default = _read(DEFAULT_RULES_PATH)
    if path is None:
        return _build(default, "default")
    user = _read(Path(path))
    unknown = sorted(set(user) - {"segments", "recency", *SCHEMES})
    if unknown:
        raise SchemaError(
            f"{path}: unknown section(s) {unknown}; expected [[segments]], [[quintiles]], "
            "[[quartiles]], [recency]"
        )
    recency = user.get("recency", {})
    if not isinstance(recency, dict):
        raise SchemaError(f"{path}: [recency] must be a table")
    merged = {**default, **user, "recency": {**default.get("recency", {}), **recency}}
    return _build(merged, str(path))


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SchemaError(f"no segment rule file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{path}: not valid TOML: {exc}") from None


def _build(data: dict[str, Any], source: str) -> SegmentRules:
    raw_segments = data.get("segments")
    if not isinstance(raw_segments, list) or not raw_segments:
        raise SchemaError(f"{source}: needs at least one [[segments]] entry")
    segments = []
    for i, entry in enumerate(raw_segments, start=1):
        where = f"{source}: [[segments]] entry {i}"
        if not isinstance(entry, dict):
            raise SchemaError(f"{where}: expected a table with name, action, offer, rank")
        missing = [k for k in ("name", "action", "offer", "rank") if k not in entry]
        if missing:
            raise SchemaError(f"{where} lacks {', '.join(missing)}")
        extra = sorted(set(entry) - {"name", "description", "action", "offer", "rank", "valuable"})
        if extra:
            raise SchemaError(f"{where}: unknown key(s) {extra}")
        if not isinstance(entry["rank"], int) or isinstance(entry["rank"], bool):
            raise SchemaError(f"{where}: rank must be a whole number, got {entry['rank']!r}")
        segments.append(
            Segment(
                name=str(entry["name"]),
                description=str(entry.get("description", "")),
                action=str(entry["action"]),
                offer=str(entry["offer"]),
                rank=int(entry["rank"]),
                valuable=bool(entry.get("valuable", False)),
            )
        )
    slugs = [_slug(s.name) for s in segments]
    duplicated = sorted(
        {s.name for s, slug in zip(segments, slugs, strict=True) if slugs.count(slug) > 1}
    )
    if duplicated:
        raise SchemaError(f"{source}: segment names must be unique, repeated: {duplicated}")
    names = {s.name for s in segments}

    rules: dict[str, tuple[Rule, ...]] = {}
    for scheme, levels in SCHEMES.items():
        raw_rules = data.get(scheme)
        if not isinstance(raw_rules, list) or not raw_rules:
            raise SchemaError(f"{source}: needs at least one [[{scheme}]] rule")
        parsed = []
        for i, entry in enumerate(raw_rules, start=1):
            where = f"{source}: [[{scheme}]] rule {i}"
            if not isinstance(entry, dict) or "segment" not in entry:
                raise SchemaError(f"{where} lacks its segment")
            if entry["segment"] not in names:
                raise SchemaError(
                    f"{where} names the segment {entry['segment']!r}, which no [[segments]] "
                    f"entry defines; defined: {', '.join(sorted(names))}"
                )
            extra = sorted(set(entry) - {"segment", "r", "f", "m"})
            if extra:
                raise SchemaError(f"{where}: unknown key(s) {extra}; use r, f, m")
            bounds = {key: _bounds(entry.get(key), levels, f"{where}, {key}") for key in "rfm"}
            parsed.append(Rule(segment=entry["segment"], **bounds))
        rules[scheme] = tuple(parsed)
        uncovered = [
            combo
            for combo in itertools.product(range(1, levels + 1), repeat=3)
            if not any(rule.matches(*combo) for rule in parsed)
        ]
        if uncovered:
            shown = ", ".join(f"r={r} f={f} m={m}" for r, f, m in uncovered[:5])
            more = f" and {len(uncovered) - 5} more" if len(uncovered) > 5 else ""
            raise SchemaError(
                f"{source}: the [[{scheme}]] rules leave {len(uncovered)} score combination(s) "
                f"without a segment ({shown}{more}); end with a rule that matches the rest"
            )
    caps = _recency_caps(data.get("recency", {}), source)
    return SegmentRules(segments=tuple(segments), rules=rules, source=source, recency_caps=caps)


def _recency_caps(data: Any, source: str) -> dict[str, dict[str, int]]:
    unknown = sorted(set(data) - set(SCHEMES))
    if unknown:
        raise SchemaError(
            f"{source}: [recency] has unknown scheme(s) {unknown}; use quintiles, quartiles"
        )
    caps: dict[str, dict[str, int]] = {}
    for scheme, levels in SCHEMES.items():
        entry = data.get(scheme, {})
        where = f"{source}: [recency.{scheme}]"
        if not isinstance(entry, dict):
            raise SchemaError(f"{where} must be a table of risk level = highest recency score")
        extra = sorted(set(entry) - set(CAPPED_RISKS))
        if extra:
            raise SchemaError(
                f"{where}: unknown risk level(s) {extra}; use {', '.join(CAPPED_RISKS)}"
            )
        for risk, cap in entry.items():
            if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= levels:
                raise SchemaError(
                    f"{where}: {risk} must be a score from 1 to {levels}, got {cap!r}"
                )
        given = [entry[r] for r in CAPPED_RISKS if r in entry]
        if given != sorted(given, reverse=True):
            raise SchemaError(f"{where}: a worse risk cannot allow a higher recency score: {entry}")
        caps[scheme] = {r: int(entry[r]) for r in CAPPED_RISKS if r in entry}
    return caps


def _bounds(value: Any, levels: int, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise SchemaError(f"{where}: expected [low, high] whole scores, got {value!r}")
    low, high = value
    if not 1 <= low <= high <= levels:
        raise SchemaError(f"{where}: expected 1 <= low <= high <= {levels}, got {value!r}")
    return (low, high)


def score_levels(scheme: str) -> int:
    """Number of score levels of a scheme: 5 for quintiles, 4 for quartiles."""
    if scheme not in SCHEMES:
        raise SchemaError(f"unknown scoring scheme {scheme!r}; choose {' or '.join(SCHEMES)}")
    return SCHEMES[scheme]


def _slug(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())
