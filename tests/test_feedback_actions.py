"""Closing the feedback loop: campaigns triggered by a detractor or a complaint, complaints
routed to a team's webhook (a real HTTP receiver on loopback), churn reasons that cite an
open complaint, and the pain points over the REST API."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from retain.campaigns.definitions import load_campaigns
from retain.campaigns.outbox import run_campaigns
from retain.cli import app
from retain.errors import DataError
from retain.ingest import ingest
from retain.segments import customer_segments
from retain.service.app import create_app
from retain.store import Store

ORDERS = """order_id,customer_id,ordered_at,net_revenue
a1,alice,2025-01-05,40
a2,alice,2025-02-04,42
a3,alice,2025-03-06,41
b1,bob,2025-01-10,30
b2,bob,2025-02-12,35
b3,bob,2025-05-20,33
c1,carol,2025-01-15,50
c2,carol,2025-02-20,55
d1,dan,2025-02-01,20
d2,dan,2025-03-01,25
"""

# alice complains of a late parcel after her last order (open); bob complained, then bought
# again (not open); carol's ticket on a damaged item is solved; dan is a detractor whose
# answer names no pain point; alice also answered the NPS survey with a 9 in March
FEEDBACK = """feedback_id,customer_id,submitted_at,kind,nps,text,status
f1,alice,2025-05-28,ticket,,My parcel is two weeks late and the tracking has not moved,open
f2,bob,2025-03-01,survey,3,Delivery was very slow,
f3,carol,2025-05-29,ticket,,The mug arrived broken,solved
f4,dan,2025-05-30,survey,2,meh,
f5,alice,2025-03-10,survey,9,Lovely shop,
"""


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    (tmp_path / "orders.csv").write_text(ORDERS)
    (tmp_path / "feedback.csv").write_text(FEEDBACK)
    db = tmp_path / "shop.duckdb"
    with Store(db) as store:
        ingest(store, tmp_path / "orders.csv", as_of="2025-05-31")
        ingest(store, tmp_path / "feedback.csv", as_of="2025-05-31")
    return db


def test_churn_reasons_cite_an_open_complaint(store_path: Path) -> None:
    with Store(store_path) as store:
        reasons = customer_segments(store)["churn_reason"]
    assert reasons["alice"].endswith("; open complaint: delivery (2025-05-28)")
    assert "complaint" not in reasons["bob"]  # he ordered again after complaining
    assert "complaint" not in reasons["carol"]  # her ticket is solved
    assert "complaint" not in reasons["dan"]  # no pain point named


CAMPAIGNS = """
[defaults]
sender = "Shop <shop@example.com>"
outbox_dir = "{outbox}"

[[campaign]]
name = "sorry-late"
trigger = {{ kind = "complaint", topics = ["delivery"] }}
channel = "file"
subject = "About your order"
text = "You wrote on {{{{ feedback.date }}}}: {{{{ feedback.text }}}}"
catch_up_days = 7

[[campaign]]
name = "detractors"
trigger = "detractor"
channel = "file"
subject = "How can we do better?"
text = "You gave us {{{{ feedback.nps | int }}}} out of 10."
catch_up_days = 7
"""


def test_detractor_and_complaint_triggers_fire_once_per_text(
    store_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "campaigns.toml"
    path.write_text(CAMPAIGNS.format(outbox=tmp_path / "outbox"))
    campaigns = load_campaigns(path)
    with Store(store_path) as store:
        store.con.execute("UPDATE customers SET email = customer_id || '@example.com'")
        dry = run_campaigns(store, campaigns, now="2025-05-31T12:00", dry_run=True, samples=10)
        texts = {(m["key"].split("/")[0], m["customer_id"]): m["body_text"] for m in dry.samples}
        # within the last 7 days: alice's open delivery complaint; dan's NPS of 2 (bob's
        # slow delivery and his 3 are from March; carol's damaged item is not delivery)
        assert set(texts) == {("sorry-late", "alice"), ("detractors", "dan")}
        assert texts[("sorry-late", "alice")] == (
            "You wrote on 2025-05-28: My parcel is two weeks late and the tracking has not moved"
        )
        assert texts[("detractors", "dan")] == "You gave us 2 out of 10."
        first = run_campaigns(store, campaigns, now="2025-05-31T12:00")
        again = run_campaigns(store, campaigns, now="2025-05-31T12:05")
    assert first.counts["sent"] == 2
    assert again.counts["sent"] == 0  # the same texts: nothing new


class Receiver(http.server.BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.fail_first > 0:
            Receiver.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        Receiver.got.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.got, Receiver.fail_first = [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_complaints_reach_the_team_that_owns_the_topic_once(
    store_path: Path, tmp_path: Path, receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[route]]\nname = "logistics"\ntopics = ["delivery", "damaged"]\n'
        f'webhook_url = "{receiver}"\n'
    )
    runner = CliRunner()
    args = ["feedback", "route", "--routes", str(routes), "--db", str(store_path)]
    out = runner.invoke(app, args)
    assert out.exit_code != 0 and "RETAIN_WEBHOOK_SECRET" in out.output
    monkeypatch.setenv("RETAIN_WEBHOOK_SECRET", "team-secret")
    Receiver.fail_first = 4  # the first text fails all its tries (1 + 3 retries)
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 1, out.output
    (route,) = json.loads(out.output)["routes"]
    # a webhook that fails stops its route for this run: the other text waits
    assert route["sent"] == 0 and len(route["failed"]) == 1 and route["waiting"] == 1
    out = runner.invoke(app, [*args, "--json"])  # the failed one is tried again
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["routes"][0]["sent"] == 2
    out = runner.invoke(app, [*args, "--json"])
    assert json.loads(out.output)["routes"][0]["sent"] == 0
    # both complaints of the last week on its topics (alice's late parcel, carol's broken
    # mug), each once; bob's is too old, dan's names no topic
    ids = sorted(json.loads(body)["data"]["feedback_id"] for _, body in Receiver.got)
    assert ids == ["f1", "f3"]
    for headers, body in Receiver.got:
        stamp = headers["X-Retain-Timestamp"]
        digest = hmac.new(b"team-secret", stamp.encode() + b"." + body, hashlib.sha256)
        assert headers["X-Retain-Signature"] == "sha256=" + digest.hexdigest()
    sent = json.loads(Receiver.got[0][1])["data"]
    assert sent["topics"] and sent["sentiment"] == "negative" and sent["text"]


def test_a_routes_file_is_checked(store_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = {
        'name = "x"': "no [[route]]",
        '[[route]]\nname = "a"\ntopics = ["parking"]\nwebhook_url = "http://x"': "no topic parking",
        '[[route]]\nname = "a"\ntopics = ["price"]\nwebhook_url = "ftp://x"': "webhook_url",
        '[[route]]\nname = "a"\ntopics = ["price"]\nsentiment = "angry"\nwebhook_url = "http://x"': (
            "sentiment"
        ),
    }
    for text, expected in bad.items():
        path = tmp_path / "routes.toml"
        path.write_text(text)
        out = runner.invoke(
            app,
            ["feedback", "route", "--routes", str(path), "--db", str(store_path), "--dry-run"],
        )
        assert out.exit_code != 0 and expected in out.output, (text, out.output)
        assert "route" in out.output


def test_the_api_serves_the_pain_points_and_their_drill_down(store_path: Path) -> None:
    with TestClient(create_app(store_path, api_key="feedback-test-key-0123")) as client:
        ranked = client.get("/api/feedback/pain-points").json()
        topics = {r["topic"]: r for r in ranked["topics"]}
        assert topics["delivery"]["mentions"] == 2 and topics["damaged"]["mentions"] == 1
        drill = client.get("/api/feedback/pain-points/delivery").json()
        assert [t["feedback_id"] for t in drill["texts"]] == ["f1", "f2"]
        assert {c["customer_id"] for c in drill["customers"]} == {"alice", "bob"}
        missing = client.get("/api/feedback/pain-points/parking")
        assert missing.status_code == 404 and "parking" in missing.json()["detail"]
        assert client.get("/feedback").status_code == 200
        assert "Delivery" in client.get("/feedback/delivery").text
        before = client.get("/api/customers/dan").json()
        assert "complaint" not in before["churn"]["reason"]
        # a new complaint through the API: the pain points and dan's churn reason see it
        posted = client.post(
            "/api/feedback",
            json={"feedback": [{"feedback_id": "f9", "customer_id": "dan",
                                "created_at": "2025-05-31", "text": "the parcel never arrived"}]},
            headers={"X-API-Key": "feedback-test-key-0123"},
        )  # fmt: skip
        assert posted.status_code == 201, posted.text
        # both are recomputed in the background after a write (the previous answer
        # meanwhile): wait for them
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            again = client.get("/api/feedback/pain-points").json()
            if {r["topic"]: r for r in again["topics"]}["delivery"]["mentions"] == 3:
                break
            time.sleep(0.2)
        assert {r["topic"]: r for r in again["topics"]}["delivery"]["mentions"] == 3
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reason = client.get("/api/customers/dan").json()["churn"]["reason"]
            if "complaint" in reason:
                break
            time.sleep(0.2)
        assert reason.endswith("open complaint: delivery (2025-05-31)")


def test_a_store_without_feedback_says_how_to_bring_it_in(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    db = tmp_path / "plain.duckdb"
    with Store(db) as store:
        ingest(store, tmp_path / "orders.csv", as_of="2025-05-31")
    with TestClient(create_app(db)) as client:
        assert client.get("/api/feedback/pain-points").json() == {"feedback": 0, "topics": []}
        page = client.get("/feedback")
        assert page.status_code == 200 and 'id="no-feedback"' in page.text


def test_feedback_by_e_mail_is_the_customer_s(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    (tmp_path / "customers.csv").write_text("customer_id,email\nalice,Alice@Example.com\n")
    (tmp_path / "feedback.csv").write_text(
        "feedback_id,customer_id,submitted_at,text\n"
        "e1,ALICE@example.com,2025-05-30,The parcel never arrived\n"
        "e2,nobody@example.com,2025-05-30,The parcel never arrived\n"
    )
    db = tmp_path / "shop.duckdb"
    with Store(db) as store:
        for name in ("orders", "customers", "feedback"):
            ingest(store, tmp_path / f"{name}.csv", as_of="2025-05-31")
        said = dict(store.con.execute("SELECT feedback_id, customer_id FROM feedback").fetchall())
        reasons = customer_segments(store)["churn_reason"]
    assert said == {"e1": "alice", "e2": "nobody@example.com"}  # no such customer: as given
    assert reasons["alice"].endswith("open complaint: delivery (2025-05-30)")


def test_a_campaign_topic_the_store_lacks_is_refused(store_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "campaigns.toml"
    path.write_text(CAMPAIGNS.format(outbox=tmp_path / "o").replace('["delivery"]', '["delivry"]'))
    with Store(store_path) as store, pytest.raises(DataError, match="delivry"):
        run_campaigns(store, load_campaigns(path), now="2025-05-31T12:00", dry_run=True)


def test_plain_statements_are_not_complaints() -> None:
    from retain.feedback import tag

    found = tag(["Got my refund, thanks", "The package arrived today", "Delivered as planned",
                 "The box was crushed", "Where is my parcel? https://t.co/x?id=5"])  # fmt: skip
    assert [t.sentiment for t in found] == ["neutral", "neutral", "positive", "negative", "neutral"]


def test_the_service_routes_complaints_while_it_holds_the_store(
    store_path: Path, tmp_path: Path, receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`retain serve --feedback-routes`: the store is the service's, so it routes; a text
    whose id is not ASCII goes out with its key percent-encoded."""
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[route]]\nname = "ops"\ntopics = ["delivery"]\nwebhook_url = "{receiver}"\n'
    )
    monkeypatch.setenv("RETAIN_WEBHOOK_SECRET", "team-secret")
    key = "feedback-test-key-0123"
    app_ = create_app(store_path, api_key=key, feedback_routes=routes, campaigns_every=0.2)
    with TestClient(app_) as client:
        posted = client.post(
            "/api/feedback",
            json={"feedback": [{"feedback_id": "Отзыв-1", "customer_id": "dan",
                                "created_at": "2025-05-31", "text": "посылка так и не пришла"}]},
            headers={"X-API-Key": key},
        )  # fmt: skip
        assert posted.status_code == 201, posted.text
        deadline = time.monotonic() + 60
        while len(Receiver.got) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    keys = sorted(headers["Idempotency-Key"] for headers, _ in Receiver.got)
    assert keys == ["route/ops/%D0%9E%D1%82%D0%B7%D1%8B%D0%B2-1", "route/ops/f1"]


def test_a_template_showing_feedback_needs_a_feedback_trigger(tmp_path: Path) -> None:
    path = tmp_path / "campaigns.toml"
    path.write_text(
        CAMPAIGNS.format(outbox=tmp_path / "o").replace(
            'trigger = "detractor"', 'trigger = "churn_risk"'
        )
    )
    with pytest.raises(DataError, match="only a detractor or complaint trigger has"):
        load_campaigns(path)
