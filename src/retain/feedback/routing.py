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
            or not all(isinstance(t, str) for t in topics)
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
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DataError(f"{where} ({name}): webhook_url {url!r}: expected an http(s) URL")
        routes.append(Route(name, tuple(topics), tuple(tones), url))
    return routes


_DUE = """
SELECT f.feedback_id, CAST(f.customer_id AS VARCHAR) AS customer_id, f.created_at, f.kind,
       f.subject, f.text, f.nps, coalesce(f.csat, f.stars) AS rating, f.sku, f.status,
       t.language, t.topics, t.sentiment
FROM feedback f JOIN feedback_tags t USING (feedback_id)
WHERE f.created_at >= $since AND f.created_at < $end
  AND len(list_intersect(t.topics, $topics)) > 0 AND list_contains($tones, t.sentiment)
  AND f.feedback_id NOT IN ({sent})
ORDER BY f.created_at, f.feedback_id
"""


def route_complaints(
    store: Store,
    routes: list[Route],
    *,
    channels: dict[str, Channel],
    max_age_days: int = MAX_AGE_DAYS,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Send each route's new texts through ``channels[route.name]``; what was sent or
    failed is kept (nothing when ``dry_run``). The answer: per route, ``sent`` (or, dry,
    ``due``) and ``failed`` with the reasons."""
    from retain.campaigns.channels import DeliveryError, Message
    from retain.metrics._common import observation

    window = observation(store, None)
    since = window.end - dt.timedelta(days=max_age_days)
    values = _values(store)
    report: dict[str, Any] = {"as_of": window.as_of.isoformat(), "routes": []}
    for route in routes:
        sent_sql = (
            "SELECT feedback_id FROM feedback_routed WHERE route = $route AND status = 'sent'"
            if store.has_table("feedback_routed")  # a read-only store may predate it
            else "SELECT NULL WHERE $route IS NULL"
        )
        due = store.con.execute(
            _DUE.format(sent=sent_sql),
            {
                "since": since,
                "end": window.end,
                "topics": list(route.topics),
                "tones": list(route.sentiments),
                "route": route.name,
            },
        ).fetch_df()
        sent, failed = 0, []
        for row in due.to_dict(orient="records"):
            data = _payload(row, values.get(str(row["customer_id"]), {}))
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
            if dry_run:
                continue
            try:
                channels[route.name].send(message)
                status, error = "sent", None
                sent += 1
            except DeliveryError as exc:
                status, error = "failed", str(exc)
                failed.append({"feedback_id": row["feedback_id"], "reason": error})
            _keep(store, str(row["feedback_id"]), route.name, status, error)
        entry: dict[str, Any] = {
            "route": route.name,
            "topics": list(route.topics),
            "failed": failed,
        }
        entry["due" if dry_run else "sent"] = len(due) if dry_run else sent
        report["routes"].append(entry)
    return report


def _values(store: Store) -> dict[str, dict[str, Any]]:
    if not store.has_table("customer_scores"):
        return {}
    frame = store.con.execute(
        "SELECT customer_id, clv_12m, p_alive, segment, churn_risk FROM customer_scores"
    ).fetch_df()
    return {
        str(r["customer_id"]): {str(k): v for k, v in r.items() if k != "customer_id"}
        for r in frame.to_dict(orient="records")
    }


def _plain(value: Any) -> Any:
    if value is None or (not isinstance(value, list | tuple) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def _payload(row: Mapping[Any, Any], worth: dict[str, Any]) -> dict[str, Any]:
    keys = ("feedback_id", "customer_id", "created_at", "kind", "subject", "text", "nps",
            "rating", "sku", "status", "language", "sentiment")  # fmt: skip
    data = {k: _plain(row[k]) for k in keys}
    data["topics"] = [str(t) for t in row["topics"]]
    for key in ("clv_12m", "p_alive", "segment", "churn_risk"):
        data[key] = _plain(worth.get(key))
    return data


def _keep(store: Store, feedback_id: str, route: str, status: str, error: str | None) -> None:
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO feedback_routed VALUES (?, ?, ?, ?, ?)",
            [feedback_id, route, status, error, dt.datetime.now(dt.UTC).replace(tzinfo=None)],
        )
