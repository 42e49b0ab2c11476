"""`retain serve --campaigns`: the campaigns run inside the service, on its own store, and
the Campaigns page and /api/campaigns show what they did."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from campaign_helpers import people_store, person
from retain.service import ServiceError, create_app
from store_helpers import free_port
from test_campaign_runs import HEAD, Inbox, one_campaign


def test_the_service_runs_campaigns_and_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("RETAIN_SMTP_URL", f"smtp://127.0.0.1:{port}")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a"), person("b"), person("c", accepts_marketing=False)],
        orders=[(f"o-{c}", c, f"{today} 00:00:01", 20.0) for c in "abc"],
    )
    file = tmp_path / "c.toml"
    file.write_text(HEAD + one_campaign('{ kind = "post_purchase", days = 0 }'), encoding="utf-8")
    try:
        app = create_app(db, warm=False, campaigns=file, campaigns_every=0.2)
        with TestClient(app, client=("127.0.0.1", 5000)) as client:
            deadline = time.monotonic() + 30
            while len(inbox.messages) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # more ticks: nothing more is sent
            payload = client.get("/api/campaigns").json()
            page = client.get("/campaigns")
    finally:
        controller.stop()
    assert sorted(inbox.to()) == ["a@example.com", "b@example.com"]
    assert payload["campaigns"][0]["sent"] == 2 and payload["campaigns"][0]["suppressed"] == 1
    assert payload["totals"]["sent"] == 2
    assert payload["last_run"]["sent"] == 0  # the latest tick found nothing new
    assert {m["status"] for m in payload["recent"]} == {"sent", "suppressed"}
    assert [c["name"] for c in payload["definitions"]] == ["c"]
    assert page.status_code == 200 and 'id="campaign-table"' in page.text
    assert 'id="last-run"' in page.text


def test_campaigns_need_a_writable_service_and_a_valid_file(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a")])
    file = tmp_path / "c.toml"
    file.write_text(HEAD + one_campaign(), encoding="utf-8")
    with pytest.raises(ServiceError, match="writable"):
        create_app(db, writes=False, warm=False, campaigns=file)
    file.write_text(HEAD + one_campaign().replace("trigger", "trigga"), encoding="utf-8")
    with pytest.raises(Exception, match="line"):
        create_app(db, warm=False, campaigns=file)


def test_the_campaigns_page_before_any_run(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a")])
    with TestClient(create_app(db, warm=False), client=("127.0.0.1", 5000)) as client:
        payload = client.get("/api/campaigns").json()
        page = client.get("/campaigns")
    assert payload["campaigns"] == [] and "no campaign has run yet" in payload["notes"][0]
    assert page.status_code == 200 and "retain campaigns init" in page.text


def test_definitions_through_the_api(tmp_path: Path) -> None:
    from retain.campaigns import example_path

    db = people_store(tmp_path / "s.duckdb", [person("a")])
    good = example_path().read_text(encoding="utf-8")
    with TestClient(create_app(db, warm=False), client=("127.0.0.1", 5000)) as client:
        checked = client.post("/api/campaigns/validate", json={"definitions": good})
        bad = client.post(
            "/api/campaigns/validate",
            json={"definitions": good.replace('name = "win-back"', 'name = "win-back"\nx = 1')},
        )
        listed = client.get("/api/campaigns").json()
    assert checked.status_code == 200
    assert [c["name"] for c in checked.json()["campaigns"]][:2] == ["next-purchase", "win-back"]
    assert bad.status_code == 422
    assert "line" in bad.json()["detail"] and "unknown field 'x'" in bad.json()["detail"]
    assert listed["definitions"] is None  # this service runs no campaigns
