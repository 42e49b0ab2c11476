"""Campaign runs against a real SMTP server on loopback: what arrives, and what never does.

Opt-outs are never mailed, caps hold over 10,000 customers and several campaigns, quiet
hours hold in three time zones, a rerun sends nothing, the unsubscribe link works end to
end, and a run killed mid-way (SIGKILL) and run again sends no key twice.
"""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from campaign_helpers import at, people_store, person
from retain.campaigns import load_campaigns, run_campaigns, suppress
from retain.campaigns.channels import FileChannel, SmtpChannel, parse_smtp_url
from retain.campaigns.definitions import parse_campaigns
from retain.store import Store
from store_helpers import free_port

HEAD = """
[defaults]
sender = "Shop <shop@example.com>"
caps = { day = 1, week = 2, month = 8 }
unsubscribe_url = "http://127.0.0.1:8765/unsubscribe"
"""


def one_campaign(trigger: str = '"birthday"', extra: str = "", name: str = "c") -> str:
    return (
        f'\n[[campaign]]\nname = "{name}"\ntrigger = {trigger}\n'
        f'subject = "Hello {{{{ customer.customer_id }}}}"\n'
        f'text = "Hi. Unsubscribe: {{{{ unsubscribe_url }}}}"\n{extra}\n'
    )


class Inbox:
    """An aiosmtpd handler keeping every message that arrives."""

    def __init__(self, delay: float = 0.0) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()
        self.delay = delay

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        if self.delay:
            time.sleep(self.delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[attr-defined]
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def to(self) -> list[str]:
        with self.lock:
            return [str(m["To"]) for m in self.messages]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, str]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def channels(url: str) -> dict[str, object]:
    return {"email": SmtpChannel(parse_smtp_url(url), "Shop <shop@example.com>")}


def test_opt_outs_never_mailed_and_a_rerun_sends_nothing(
    tmp_path: Path, smtp: tuple[Inbox, str]
) -> None:
    inbox, url = smtp
    db = people_store(
        tmp_path / "s.duckdb",
        [
            person("yes", birthday="1990-12-31"),
            person("no-marketing", birthday="1990-12-31", accepts_marketing=False),
            person("unsubscribed", birthday="1990-12-31"),
            person("no-address", birthday="1990-12-31", email=None),
            person("bounced", birthday="1990-12-31"),
        ],
    )
    campaigns = parse_campaigns(HEAD + one_campaign())
    with Store(db) as store:
        suppress(store, "unsubscribed")
        suppress(store, "bounced", reason="bounced", scope="all")
        first = run_campaigns(store, campaigns, now=at("2025-12-31T12:00"), channels=channels(url))
        assert first.counts["sent"] == 1 and first.counts["suppressed"] == 4
        assert inbox.to() == ["yes@example.com"]
        again = run_campaigns(store, campaigns, now=at("2025-12-31T12:05"), channels=channels(url))
        later = run_campaigns(store, campaigns, now=at("2026-01-02T09:00"), channels=channels(url))
        statuses = dict(
            store.con.execute("SELECT customer_id, status FROM campaign_outbox").fetchall()
        )
    assert again.counts["sent"] == 0 and later.counts["sent"] == 0
    assert inbox.to() == ["yes@example.com"]
    assert statuses == {
        "yes": "sent",
        "no-marketing": "suppressed",
        "unsubscribed": "suppressed",
        "no-address": "suppressed",
        "bounced": "suppressed",
    }
    message = inbox.messages[0]
    assert message["Subject"] == "Hello yes"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Retain-Key"] == "c/yes/birthday:2025"


def test_transactional_skips_caps_but_not_its_own_opt_out(
    tmp_path: Path, smtp: tuple[Inbox, str]
) -> None:
    inbox, url = smtp
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a"), person("b"), person("c")],
        orders=[
            ("o1", "a", "2025-12-24 09:00:00", 10.0),
            ("o2", "b", "2025-12-24 09:00:00", 10.0),
            ("o3", "c", "2025-12-24 09:00:00", 10.0),
        ],
    )
    text = (
        HEAD.replace("day = 1", "day = 0")  # no marketing at all today
        + one_campaign('{ kind = "post_purchase", days = 7 }', "transactional = true", "receipt")
        + one_campaign('{ kind = "post_purchase", days = 7 }', "", "promo")
    )
    with Store(db) as store:
        suppress(store, "b", scope="marketing")  # marketing only: receipts still go
        suppress(store, "c", reason="do_not_contact", scope="all")
        result = run_campaigns(
            store, parse_campaigns(text), now=at("2025-12-31T12:00"), channels=channels(url)
        )
    assert sorted(inbox.to()) == ["a@example.com", "b@example.com"]
    assert all(m["List-Unsubscribe"] is None for m in inbox.messages)  # transactional
    # a: capped (no marketing today); b and c: opted out of marketing
    assert result.by_campaign["promo"]["capped"] == 1
    assert result.by_campaign["promo"]["suppressed"] == 2
    assert result.by_campaign["receipt"]["suppressed"] == 1  # c: do not contact at all


def test_quiet_hours_in_three_time_zones(tmp_path: Path, smtp: tuple[Inbox, str]) -> None:
    inbox, url = smtp
    db = people_store(
        tmp_path / "s.duckdb",
        [
            person("tokyo", birthday="1990-12-31", timezone="Asia/Tokyo"),
            person("paris", birthday="1990-12-31", timezone="Europe/Paris"),
            person("new-york", birthday="1990-12-31", timezone="America/New_York"),
            person("store-zone", birthday="1990-12-31"),  # none: the store's (UTC)
        ],
    )
    head = HEAD + 'quiet_hours = { start = "21:00", end = "08:00" }\n'
    campaigns = parse_campaigns(head + one_campaign(extra="catch_up_days = 2"))
    with Store(db) as store:
        # 12:00 UTC: 21:00 in Tokyo (quiet), 13:00 in Paris, 07:00 in New York (quiet)
        noon = run_campaigns(store, campaigns, now=at("2025-12-31T12:00"), channels=channels(url))
        assert sorted(inbox.to()) == ["paris@example.com", "store-zone@example.com"]
        assert noon.counts["held"] == 2
        held = dict(
            store.con.execute(
                "SELECT customer_id, not_before FROM campaign_outbox WHERE status = 'held'"
            ).fetchall()
        )
        assert {k: v.isoformat() for k, v in held.items()} == {
            "tokyo": "2025-12-31T23:00:00",  # 08:00 in Tokyo on 1 January
            "new-york": "2025-12-31T13:00:00",  # 08:00 in New York
        }
        run_campaigns(store, campaigns, now=at("2025-12-31T13:30"), channels=channels(url))
        assert "new-york@example.com" in inbox.to() and "tokyo@example.com" not in inbox.to()
        run_campaigns(store, campaigns, now=at("2025-12-31T23:05"), channels=channels(url))
    assert sorted(inbox.to()) == sorted(
        ["paris@example.com", "store-zone@example.com", "new-york@example.com", "tokyo@example.com"]
    )


def test_caps_hold_over_10000_customers_and_several_campaigns(tmp_path: Path) -> None:
    n = 10_000
    people = [
        person(f"c{i:05d}", birthday="1990-12-31" if i % 2 else "1990-06-01") for i in range(n)
    ]
    orders = [(f"o{i}", f"c{i:05d}", "2024-12-31 10:00:00", 25.0) for i in range(n)]
    orders += [(f"p{i}", f"c{i:05d}", "2025-12-24 10:00:00", 25.0) for i in range(0, n, 3)]
    db = people_store(tmp_path / "s.duckdb", people, orders=orders)
    text = (
        HEAD
        + one_campaign('"birthday"', "", "birthday")
        + one_campaign('"anniversary"', "", "anniversary")
        + one_campaign('{ kind = "post_purchase", days = 7 }', "", "follow-up")
    )
    campaigns = parse_campaigns(text)
    sent_to: list[str] = []
    with Store(db) as store:
        for day in ("2025-12-31", "2026-01-01", "2026-01-02"):
            files = FileChannel(tmp_path / f"out-{day}")
            result = run_campaigns(
                store, campaigns, now=at(f"{day}T12:00"), channels={"email": files}
            )
            sent_to += [r.split("/")[1] for r in _sent_keys(store, day)]
            assert result.counts["failed"] == 0
        per_day = store.query(
            """SELECT customer_id, CAST(sent_at AS DATE) AS day, count(*) AS n
               FROM campaign_outbox WHERE status = 'sent' GROUP BY ALL"""
        )
        statuses = store.query("SELECT status, count(*) AS n FROM campaign_outbox GROUP BY ALL")
    counts = dict(zip(statuses["status"], statuses["n"], strict=True))
    # everyone fires for the anniversary, half for a birthday, a third for the follow-up:
    # one message a day each, at most two a week
    assert counts["sent"] >= n and counts["capped"] > 0
    by_customer = pd.Series(sent_to).value_counts()
    assert by_customer.max() <= 2
    assert per_day["n"].max() == 1


def _sent_keys(store: Store, day: str) -> list[str]:
    return [
        r[0]
        for r in store.con.execute(
            "SELECT key FROM campaign_outbox WHERE status = 'sent' AND CAST(created_at AS DATE) = ?",
            [day],
        ).fetchall()
    ]


def test_the_unsubscribe_link_works_end_to_end(tmp_path: Path, smtp: tuple[Inbox, str]) -> None:
    from retain.service import create_app

    inbox, url = smtp
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a", birthday="1990-12-31"), person("b", birthday="1990-12-31")],
        orders=[("a1", "a", "2025-12-24 09:00:00", 10.0), ("b1", "b", "2025-12-24 09:00:00", 10.0)],
    )
    text = HEAD + one_campaign() + one_campaign('{ kind = "post_purchase", days = 8 }', "", "later")
    campaigns = parse_campaigns(text)
    with Store(db) as store:
        run_campaigns(store, campaigns, now=at("2025-12-31T12:00"), channels=channels(url))
    link = str(inbox.messages[0]["List-Unsubscribe"]).strip().strip("<>")
    parts = urlsplit(link)
    who = str(inbox.messages[0]["To"]).split("@")[0]
    with TestClient(create_app(db, None, warm=False), client=("127.0.0.1", 5000)) as client:
        page = client.get(f"{parts.path}?{parts.query}")
        assert page.status_code == 200 and 'id="confirm"' in page.text
        forged = client.post(parts.path + "?" + parts.query.replace("token=", "token=x"))
        assert forged.status_code == 400
        done = client.post(f"{parts.path}?{parts.query}", data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert client.post(f"{parts.path}?{parts.query}").status_code == 200  # twice: harmless
    with Store(db) as store:
        suppressed = store.con.execute(
            "SELECT customer_id, source FROM contact_suppressions"
        ).fetchall()
        assert suppressed == [(who, "link")]
        second = run_campaigns(store, campaigns, now=at("2026-01-01T12:00"), channels=channels(url))
    assert second.by_campaign["later"]["suppressed"] == 1
    assert inbox.to().count(f"{who}@example.com") == 1


KILLED_RUN = """
import sys
from retain.campaigns import load_campaigns, run_campaigns
from retain.store import Store
with Store(sys.argv[1]) as store:
    run_campaigns(store, load_campaigns(sys.argv[2]), now=sys.argv[3])
"""


def test_a_run_killed_mid_way_sends_no_key_twice(tmp_path: Path) -> None:
    inbox = Inbox(delay=0.02)
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        n = 300
        people = [person(f"c{i:03d}", birthday="1990-12-31") for i in range(n)]
        db = people_store(tmp_path / "s.duckdb", people)
        file = tmp_path / "campaigns.toml"
        file.write_text(HEAD + one_campaign(), encoding="utf-8")
        env = {**os.environ, "RETAIN_SMTP_URL": f"smtp://127.0.0.1:{port}"}
        args = [sys.executable, "-c", KILLED_RUN, str(db), str(file), "2025-12-31T12:00:00"]
        child = subprocess.Popen(args, env=env)
        deadline = time.monotonic() + 60
        while len(inbox.messages) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        arrived_before = len(inbox.messages)
        assert 0 < arrived_before < n  # killed mid-way
        subprocess.run(args, env=env, check=True, timeout=120)
    finally:
        controller.stop()
    keys = [str(m["X-Retain-Key"]) for m in inbox.messages]
    assert len(keys) == len(set(keys))  # no key twice
    with Store(db, read_only=True) as store:
        statuses = dict(
            store.con.execute(
                "SELECT status, count(*) FROM campaign_outbox GROUP BY ALL"
            ).fetchall()
        )
    # at most the one message in flight when the run died is unconfirmed, never resent
    assert statuses.get("unconfirmed", 0) <= 1
    assert statuses["sent"] + statuses.get("unconfirmed", 0) == n
    assert len(keys) in (n - statuses.get("unconfirmed", 0), n)


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a", birthday="1990-12-31")])
    campaigns = load_campaigns(_write(tmp_path / "c.toml", HEAD + one_campaign()))
    with Store(db) as store:
        result = run_campaigns(store, campaigns, now=at("2025-12-31T12:00"), dry_run=True)
        rows = store.scalar("SELECT count(*) FROM campaign_outbox")
    assert result.counts["would_send"] == 1 and rows == 0
    assert result.samples[0]["subject"] == "Hello a"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_an_smtp_server_that_is_down_loses_nothing(tmp_path: Path, smtp: tuple[Inbox, str]) -> None:
    inbox, url = smtp
    db = people_store(tmp_path / "s.duckdb", [person("a", birthday="1990-12-31")])
    campaigns = parse_campaigns(HEAD + one_campaign())
    down = f"smtp://127.0.0.1:{free_port()}?timeout=2"
    with Store(db) as store:
        first = run_campaigns(store, campaigns, now=at("2025-12-31T12:00"), channels=channels(down))
        row = store.con.execute(
            "SELECT status, attempts, reason, not_before FROM campaign_outbox"
        ).fetchall()[0]
        assert first.counts["sent"] == 0 and first.counts["queued"] == 1
        assert row[0] == "queued" and row[1] == 1 and "cannot reach the SMTP server" in row[2]
        assert row[3].isoformat() == "2025-12-31T12:05:00"  # tried again 5 minutes later
        soon = run_campaigns(store, campaigns, now=at("2025-12-31T12:01"), channels=channels(url))
        assert soon.counts["sent"] == 0 and inbox.to() == []
        later = run_campaigns(store, campaigns, now=at("2025-12-31T12:06"), channels=channels(url))
        attempts = store.scalar("SELECT attempts FROM campaign_outbox")
    assert later.counts["sent"] == 1 and inbox.to() == ["a@example.com"] and attempts == 2


def test_a_template_error_writes_nothing(tmp_path: Path) -> None:
    from retain.errors import DataError

    db = people_store(tmp_path / "s.duckdb", [person("a", birthday="1990-12-31")])
    text = HEAD + one_campaign().replace("Hi.", "Hi {{ customer.shoe_size }}.")
    with Store(db) as store:
        with pytest.raises(DataError, match=r"campaign 'c': the text template.*shoe_size"):
            run_campaigns(
                store,
                parse_campaigns(text),
                now=at("2025-12-31T12:00"),
                channels={"email": FileChannel(tmp_path / "out")},
            )
        assert store.scalar("SELECT count(*) FROM campaign_outbox") == 0
    assert not list((tmp_path / "out").glob("*.eml"))


def test_cli_run_with_bad_addresses_and_zones(
    tmp_path: Path, smtp: tuple[Inbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from retain.cli import app

    inbox, url = smtp
    db = people_store(
        tmp_path / "s.duckdb",
        [
            person("good", birthday="1990-12-31", timezone="Mars/Olympus"),  # store's zone
            person("bad-address", birthday="1990-12-31", email="not-an-address"),
            person("spaces", birthday="1990-12-31", email="a b@example.com"),
        ],
    )
    file = _write(
        tmp_path / "c.toml",
        HEAD + 'quiet_hours = { start = "21:00", end = "08:00" }\n' + one_campaign(),
    )
    monkeypatch.setenv("RETAIN_SMTP_URL", url)
    runner = CliRunner()
    args = ["campaigns", "run", "--db", str(db), "--campaigns", str(file)]
    result = runner.invoke(app, [*args, "--now", "2025-12-31T12:00:00", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert {k: counts[k] for k in ("sent", "held", "capped", "suppressed", "failed")} == {
        "sent": 1,
        "held": 0,
        "capped": 0,
        "suppressed": 2,
        "failed": 0,
    }
    assert counts["reasons"] == {"no e-mail address": 2}
    assert inbox.to() == ["good@example.com"]
    text = runner.invoke(app, [*args, "--now", "2025-12-31T12:01:00"])
    assert text.exit_code == 0 and "nothing due" in text.output
    bad = runner.invoke(app, [*args, "--now", "yesterday"])
    assert bad.exit_code == 2 and "ISO date-time" in bad.output
    monkeypatch.delenv("RETAIN_SMTP_URL")
    unset = runner.invoke(app, [*args, "--now", "2026-12-31T12:00:00"])
    assert unset.exit_code == 2 and "RETAIN_SMTP_URL" in unset.output


def test_an_unsubscribe_leaves_audience_exports_at_once(tmp_path: Path) -> None:
    from retain.segments import audience, customer_segments

    people = [person(f"c{i}") for i in range(6)]
    orders = [(f"o{i}", f"c{i}", f"2025-0{1 + i}-01 10:00:00", 50.0 + i) for i in range(6)]
    db = people_store(tmp_path / "s.duckdb", people, orders=orders)
    with Store(db) as store:
        segment = customer_segments(store).loc["c0", "segment"]
        before = set(audience(store, segment)["customer_id"])
        assert "c0" in before
        suppress(store, "c0")
        exported = audience(store, segment)
    assert set(exported["customer_id"]) == before - {"c0"}
    assert exported.attrs["opted_out"] == 1


def test_limit_queues_and_delivers_in_order_and_rate_paces(tmp_path: Path) -> None:
    db = people_store(
        tmp_path / "s.duckdb", [person(f"c{i}", birthday="1990-12-31") for i in range(5)]
    )
    head = HEAD + "rate = { email = 4 }\n"
    campaigns = parse_campaigns(head + one_campaign())
    files = FileChannel(tmp_path / "out")
    with Store(db) as store:
        queued = run_campaigns(
            store, campaigns, now=at("2025-12-31T12:00"), channels={"email": files}, limit=0
        )
        assert queued.counts["sent"] == 0
        assert store.scalar("SELECT count(*) FROM campaign_outbox WHERE status = 'queued'") == 5
        first = run_campaigns(
            store, campaigns, now=at("2025-12-31T12:01"), channels={"email": files}, limit=2
        )
        sent = [
            r[0]
            for r in store.con.execute(
                "SELECT customer_id FROM campaign_outbox WHERE status = 'sent' ORDER BY 1"
            ).fetchall()
        ]
        assert first.counts["sent"] == 2 and sent == ["c0", "c1"]  # in order of the outbox
        assert campaigns.defaults.rate == {"email": 4.0}  # the pace: test_pace_waits_...
        rest = run_campaigns(
            store, campaigns, now=at("2025-12-31T12:02"), channels={"email": files}
        )
    assert rest.counts["sent"] == 3
    assert len(list((tmp_path / "out").glob("*.eml"))) == 5


def test_post_purchase_messages_offer_what_goes_with_that_order(tmp_path: Path) -> None:
    from store_helpers import insert_frames

    people = [person(f"c{i:02d}") for i in range(30)] + [person("buyer")]
    orders = [(f"o{i:02d}", f"c{i:02d}", "2025-06-01 10:00:00", 30.0) for i in range(30)]
    orders.append(("new", "buyer", "2025-12-24 10:00:00", 30.0))
    db = people_store(tmp_path / "s.duckdb", people, orders=orders)
    lines = [(f"o{i:02d}", sku, f"Product {sku}") for i in range(30) for sku in ("TENT", "STAKES")]
    lines += [(f"o{i:02d}", "MAT", "Product MAT") for i in range(0, 30, 3)]
    lines += [("new", "TENT", "Product TENT")]
    frame = pd.DataFrame(lines, columns=["order_id", "sku", "name"])
    text = HEAD + one_campaign('{ kind = "post_purchase", days = 7 }').replace(
        "Hi.", "Goes with it: {% for p in recommendations %}{{ p.sku }} {% endfor %}."
    )
    with Store(db) as store:
        insert_frames(store, {"order_lines": frame})
        files = FileChannel(tmp_path / "out")
        run_campaigns(
            store, parse_campaigns(text), now=at("2025-12-31T12:00"), channels={"email": files}
        )
        body = store.scalar("SELECT body_text FROM campaign_outbox WHERE customer_id = 'buyer'")
    offered = body.split("Goes with it: ")[1].split(".")[0].split()
    assert offered[0] == "STAKES"  # bought with a tent in every order
    assert "TENT" not in offered  # not what the order already holds
    from retain.campaigns import preview

    personal = HEAD + one_campaign('"birthday"', "", "birthday").replace(
        "Hi.", "For you: {% for p in recommendations %}{{ p.sku }} {% endfor %}."
    )
    with Store(db, read_only=True) as store:
        shown = preview(store, parse_campaigns(personal), "birthday", "c01")
        after_order = preview(store, parse_campaigns(text), "c", "buyer")
    assert shown[0]["body_text"].split("For you: ")[1].split()[0] == "MAT"  # not bought yet
    assert after_order[0]["body_text"].split("Goes with it: ")[1].split()[0] == "STAKES"


def test_coupons_are_unique_single_use_and_redeemed_by_the_order_that_carries_them(
    tmp_path: Path,
) -> None:
    from retain.campaigns import campaign_report
    from retain.ingest import ingest

    people = [person(f"c{i}", birthday="1990-12-31") for i in range(3)]
    db = people_store(tmp_path / "s.duckdb", people)
    text = HEAD + one_campaign(extra="coupon_days = 10").replace(
        "Hi.", "Your code {{ coupon }}, until {{ coupon_expires }}."
    )
    campaigns = parse_campaigns(text)
    files = {"email": FileChannel(tmp_path / "out")}
    with Store(db) as store:
        run_campaigns(store, campaigns, now=at("2025-12-31T12:00"), channels=files)
        coupons = store.query("SELECT * FROM campaign_coupons ORDER BY customer_id")
        bodies = dict(
            store.con.execute("SELECT customer_id, body_text FROM campaign_outbox").fetchall()
        )
    assert len(coupons) == 3 and coupons["code"].is_unique
    assert all(code.startswith("C-") for code in coupons["code"])
    assert all(coupons["expires_at"].dt.date.astype(str) == "2026-01-10")
    for cid, code in zip(coupons["customer_id"], coupons["code"], strict=True):
        assert f"Your code {code}, until 2026-01-10." in bodies[cid]
    used = coupons.set_index("customer_id")["code"]
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,customer_id,ordered_at,net_revenue,discount_code\n"
        f"r1,c0,2026-01-03 10:00:00,30.00, {used['c0'].lower()} \n"  # any case, spaces
        f"r2,c0,2026-01-04 10:00:00,30.00,{used['c0']}\n"  # again: the first one used it
        f"r3,c1,2026-01-20 10:00:00,30.00,{used['c1']}\n"  # expired
        "r4,c2,2026-01-03 10:00:00,30.00,\n",
        encoding="utf-8",
    )
    with Store(db) as store:
        ingest(store, orders)
        assert store.scalar("SELECT discount_code FROM orders WHERE order_id = 'r2'") == used["c0"]
        run_campaigns(store, campaigns, now=at("2026-01-21T12:00"), channels=files)
        redeemed = dict(
            store.con.execute("SELECT customer_id, order_id FROM campaign_coupons").fetchall()
        )
        report = campaign_report(store).iloc[0]
    assert redeemed == {"c0": "r1", "c1": None, "c2": None}
    assert report["coupons_issued"] == 3 and report["coupons_redeemed"] == 1


def test_a_shopify_export_keeps_the_discount_code(tmp_path: Path) -> None:
    from retain.ingest import ingest

    data = Path(__file__).parent / "data" / "shopify_orders.csv"
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, data, format="shopify")
        code = store.scalar("SELECT discount_code FROM orders WHERE order_id = '#1001'")
    assert code == "WELCOME10"


def test_a_killed_webhook_run_resends_only_the_one_in_flight_with_its_key(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Idempotency-Key"])
            time.sleep(0.01)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        n = 200
        db = people_store(
            tmp_path / "s.duckdb", [person(f"c{i:03d}", birthday="1990-12-31") for i in range(n)]
        )
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        file = _write(
            tmp_path / "c.toml",
            HEAD.replace("[defaults]", f'[defaults]\nwebhook_url = "{url}"')
            + one_campaign(extra='channel = "webhook"'),
        )
        env = {**os.environ, "RETAIN_WEBHOOK_SECRET": "s3cret"}
        args = [sys.executable, "-c", KILLED_RUN, str(db), str(file), "2025-12-31T12:00:00"]
        child = subprocess.Popen(args, env=env)
        deadline = time.monotonic() + 60
        while len(seen) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert 0 < len(seen) < n
        subprocess.run(args, env=env, check=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert set(seen) == {f"c/c{i:03d}/birthday:2025" for i in range(n)}
    assert len(seen) - len(set(seen)) <= 1  # the one in flight, resent with the same key
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM campaign_outbox WHERE status = 'sent'") == n


def test_the_smtp_server_from_the_store_settings_password_never_shown(
    tmp_path: Path, smtp: tuple[Inbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from retain.cli import app

    inbox, url = smtp
    monkeypatch.delenv("RETAIN_SMTP_URL", raising=False)
    db = people_store(tmp_path / "s.duckdb", [person("a", birthday="1990-12-31")])
    file = _write(tmp_path / "c.toml", HEAD + one_campaign())
    runner = CliRunner()
    bad = runner.invoke(app, ["settings", "set", "smtp_url", "http://x", "--db", str(db)])
    assert bad.exit_code == 2 and "unknown scheme" in bad.output
    with_password = url.replace("smtp://", "smtp://shop:hunter2@")
    done = runner.invoke(app, ["settings", "set", "smtp_url", with_password, "--db", str(db)])
    assert done.exit_code == 0 and "hunter2" not in done.output and "***" in done.output
    shown = runner.invoke(app, ["settings", "--json", "--db", str(db)])
    assert "hunter2" not in shown.output
    row = next(r for r in json.loads(shown.output) if r["name"] == "smtp_url")
    assert row["value"].startswith("smtp://shop:***@127.0.0.1:")
    # this server offers no AUTH: the run says so, keeps the message and tries it later
    args = ["campaigns", "run", "--db", str(db), "--campaigns", str(file), "--json"]
    refused = runner.invoke(app, [*args, "--now", "2025-12-31T12:00:00"])
    assert refused.exit_code == 0, refused.output
    assert json.loads(refused.output)["queued"] == 1 and inbox.to() == []
    with Store(db, read_only=True) as store:
        reason = store.scalar("SELECT reason FROM campaign_outbox")
    assert "127.0.0.1" in reason and "hunter2" not in reason
    runner.invoke(app, ["settings", "set", "smtp_url", url, "--db", str(db)])
    sent = runner.invoke(app, [*args, "--now", "2025-12-31T12:10:00"])
    assert json.loads(sent.output)["sent"] == 1 and inbox.to() == ["a@example.com"]


def test_pace_waits_the_gap_a_rate_leaves_between_sends() -> None:
    from retain.campaigns.outbox import pace

    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    last: dict[str, float] = {}
    for step in (0.0, 0.1, 0.0, 0.5):  # time spent sending between calls
        now[0] += step
        pace(last, "email", 4.0, clock=lambda: now[0], sleep=sleep)
    # the first send goes at once; then 0.25 s apart: 0.15 s left after 0.1, 0.25, none after 0.5
    assert [round(w, 9) for w in waits] == [0.15, 0.25]
    assert last == {"email": 100.0 + 0.1 + 0.15 + 0.25 + 0.5}


def test_a_coupon_only_for_the_variant_that_shows_one(tmp_path: Path) -> None:
    db = people_store(
        tmp_path / "s.duckdb", [person(f"c{i}", birthday="1990-12-31") for i in range(20)]
    )
    text = HEAD + (
        '\n[[campaign]]\nname = "b"\ntrigger = "birthday"\n'
        '[[campaign.variants]]\nname = "code"\nsubject = "s"\ntext = "{{ coupon }}"\n'
        '[[campaign.variants]]\nname = "plain"\nsubject = "s"\ntext = "Happy birthday"\n'
    )
    with Store(db) as store:
        run_campaigns(
            store,
            parse_campaigns(text),
            now=at("2025-12-31T12:00"),
            channels={"email": FileChannel(tmp_path / "out")},
        )
        shown = store.scalar("SELECT count(*) FROM campaign_outbox WHERE variant = 'code'")
        issued = store.scalar("SELECT count(*) FROM campaign_coupons")
    assert 0 < shown < 20 and issued == shown


def test_a_store_older_than_campaigns_read_only_dry_runs_and_reports(tmp_path: Path) -> None:
    from retain.campaigns import campaign_report, preview
    from retain.service.data import campaigns_payload

    db = people_store(tmp_path / "s.duckdb", [person("a", birthday="1990-12-31")])
    with Store(db) as store:  # as a store made before the campaigns' migrations left it
        for table in (
            "campaign_outbox",
            "contact_suppressions",
            "campaign_segments",
            "campaign_coupons",
        ):
            store.con.execute(f"DROP TABLE {table}")
    campaigns = parse_campaigns(HEAD + one_campaign().replace("Hi.", "{{ coupon }}"))
    with Store(db, read_only=True) as store:
        result = run_campaigns(store, campaigns, now=at("2025-12-31T12:00"), dry_run=True)
        report = campaign_report(store)
        shown = preview(store, campaigns, "c", "a")
        page = campaigns_payload(store)
    assert result.counts["would_send"] == 1
    assert report.empty and page["campaigns"] == [] and "C-PREVIEW" in shown[0]["body_text"]
