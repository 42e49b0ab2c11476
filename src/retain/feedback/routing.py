"""New complaints sent to the team that owns their topic, each once.

A routes file names, per team, the topics it owns and the webhook that reaches it::

    [[route]]
    name = "logistics"
    topics = ["delivery", "damaged", "wrong_item"]
    webhook_url = "https://hooks.example.com/logistics"

    [[route]]
    name = "support"
    topics = ["service"]
    sentiment = ["negative", "neutral"]     # default: negative only
    webhook_url = "https://hooks.example.com/support"

:func:`route_complaints` (``retain feedback route --routes FILE``) posts every stored text
tagged with one of a route's topics, in one of its tones, dated within ``max_age_days``
of the store's day, that the route has not been sent yet: one signed POST per text and
route, the campaigns' webhook (:class:`retain.campaigns.channels.WebhookChannel`:
``Idempotency-Key``, ``X-Retain-Signature`` with ``RETAIN_WEBHOOK_SECRET``, retries).
``data`` holds the text, its topics and tone, the score given and what the customer is
worth. What was sent is kept in ``feedback_routed``, so a rerun sends only what is new
and retries what failed.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from retain.errors import DataError

if TYPE_CHECKING:
    from retain.campaigns.channels import Channel
    from retain.store import Store

MAX_AGE_DAYS = 7
"""How old a text may be and still be routed: a first run does not send the backlog."""


@dataclass(frozen=True)
class Route:
    name: str
    topics: tuple[str, ...]
    sentiments: tuple[str, ...]
    webhook_url: str


def load_routes(path: Path, known_topics: set[str]) -> list[Route]:
    """The routes of a TOML file, checked: an error names the file, the route and the field."""
    from retain.feedback.tagging import SENTIMENTS

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such routes file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it as a routes file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a routes file ({exc})") from None
    entries = doc.get("route")
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: no [[route]] table (a name, topics and webhook_url each)")
    routes, names = [], set()
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: route {number}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected a table")
        unknown = sorted(set(entry) - {"name", "topics", "sentiment", "webhook_url"})
        if unknown:
            raise DataError(
                f"{where}: unknown {', '.join(unknown)} (name, topics, sentiment, webhook_url)"
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or name in names:
            raise DataError(f"{where}: name {name!r}: expected a name of its own")
        names.add(name)
        topics = entry.get("topics")
        if (
            not isinstance(topics, list)
            or not topics
            or not all(isinstance(t, str) and t.strip() for t in topics)
        ):
            raise DataError(f"{where} ({name}): topics should be a list of topic ids")
        missing = sorted(set(topics) - known_topics)
        if missing:
            raise DataError(
                f"{where} ({name}): no topic {', '.join(missing)} in the store's taxonomy "
                f"({', '.join(sorted(known_topics))})"
            )
        tones = entry.get("sentiment", ["negative"])
        if isinstance(tones, str):
            tones = [tones]
        if not isinstance(tones, list) or not tones or any(t not in SENTIMENTS for t in tones):
            raise DataError(
                f"{where} ({name}): sentiment {tones!r}: expected some of {', '.join(SENTIMENTS)}"
            )
        url = entry.get("webhook_url")
        if url is None:
            raise DataError(f"{where} ({name}): no webhook_url (the team's http(s) URL)")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DataError(f"{where} ({name}): webhook_url {url!r}: expected an http(s) URL")
        routes.append(Route(name, tuple(topics), tuple(tones), url))
    return routes


_DUE = """
SELECT f.feedback_id, CAST(f.customer_id AS VARCHAR) AS customer_id, f.created_at, f.kind,
       f.subject, f.text, f.nps, coalesce(f.csat, f.stars) AS rating, f.sku, f.status,
       t.language, t.topics, t.sentiment, {worth}
FROM feedback f JOIN feedback_tags t USING (feedback_id) {scores}
WHERE f.created_at < $end
  AND (f.created_at >= $since OR f.feedback_id IN ({failed}))
  AND len(list_intersect(t.topics, $topics)) > 0 AND list_contains($tones, t.sentiment)
  AND f.feedback_id NOT IN ({sent})
ORDER BY f.created_at, f.feedback_id
"""
WORTH = ("clv_12m", "p_alive", "segment", "churn_risk")


def route_complaints(
    store: Store,
    routes: list[Route],
    *,
    channels: dict[str, Channel],
    max_age_days: int = MAX_AGE_DAYS,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Send each route's new texts through ``channels[route.name]``, oldest first; what
    was sent or failed is kept (nothing when ``dry_run``). A text is new up to
    ``max_age_days`` after it was said (counted back from the store's observation day, its
    ``as_of`` setting, else now); one that failed is tried again whatever its age. A route
    whose webhook fails stops there for this run: the rest wait for the next. The
    answer: per route, ``sent`` (or, dry, ``due``), ``failed`` with the reason, and
    ``waiting``."""
    from retain.campaigns.channels import DeliveryError, Message
    from retain.config import observation_time

    end = observation_time(store) or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    since = end - dt.timedelta(days=max_age_days)
    kept = store.has_table("feedback_routed")  # a read-only store may predate it
    ledger = "SELECT feedback_id FROM feedback_routed WHERE route = $route AND status = '{}'"
    none = "SELECT NULL WHERE $route IS NULL"
    scored = store.has_table("customer_scores")
    sql = _DUE.format(
        worth=", ".join(f"s.{c}" if scored else f"NULL AS {c}" for c in WORTH),
        scores="LEFT JOIN customer_scores s ON s.customer_id = f.customer_id" if scored else "",
        failed=ledger.format("failed") if kept else none,
        sent=ledger.format("sent") if kept else none,
    )
    report: dict[str, Any] = {"as_of": end.isoformat(timespec="seconds"), "routes": []}
    for route in routes:
        due = store.con.execute(
            sql,
            {
                "since": since,
                "end": end,
                "topics": list(route.topics),
                "tones": list(route.sentiments),
                "route": route.name,
            },
        ).fetch_df()
        entry: dict[str, Any] = {"route": route.name, "topics": list(route.topics)}
        if dry_run:
            entry.update(due=len(due), failed=[], waiting=0)
            report["routes"].append(entry)
            continue
        sent, failed = 0, []
        for row in due.to_dict(orient="records"):
            data = _payload(row)
            message = Message(
                key=f"route/{route.name}/{row['feedback_id']}",
                campaign=f"route:{route.name}",
                customer_id=str(row["customer_id"]),
                to=route.webhook_url,
                subject=", ".join(data["topics"]) + f" ({data['sentiment']})",
                text=data["text"] or "",
                transactional=True,
                data=data,
            )
            try:
                channels[route.name].send(message)
            except DeliveryError as exc:
                failed.append({"feedback_id": row["feedback_id"], "reason": str(exc)})
                _keep(store, str(row["feedback_id"]), route.name, "failed", str(exc))
                break  # its webhook is down: the rest wait for the next run
            _keep(store, str(row["feedback_id"]), route.name, "sent", None)
            sent += 1
        entry.update(sent=sent, failed=failed, waiting=len(due) - sent - len(failed))
        report["routes"].append(entry)
    return report


def _plain(value: Any) -> Any:
    if value is None or (not isinstance(value, list | tuple) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def _payload(row: Mapping[Any, Any]) -> dict[str, Any]:
    """What a route's webhook gets in ``data``: the text as :func:`retain.feedback.said`
    gives it, with the customer's worth."""
    from retain.feedback import said

    data = said(row)
    data["customer_id"] = str(row["customer_id"])
    data["sku"] = _plain(row["sku"])
    data["status"] = _plain(row["status"])
    data["language"] = _plain(row["language"])
    for key in WORTH:
        data[key] = _plain(row[key])
    return data


def _keep(store: Store, feedback_id: str, route: str, status: str, error: str | None) -> None:
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO feedback_routed VALUES (?, ?, ?, ?, ?)",
            [feedback_id, route, status, error, dt.datetime.now(dt.UTC).replace(tzinfo=None)],
        )
