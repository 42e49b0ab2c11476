"""The loyalty ledger: a hand-checked sequence, referrals with their cap and guards, tiers
with a grace period, the rules' mistakes, the CLI, and concurrent redemptions through a
real `retain serve`."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from campaign_helpers import people_store, person
from retain.cli import app
from retain.config import set_setting
from retain.errors import DataError
from retain.loyalty import KeyReused, NotEnoughPoints, balance, build, write_entry
from retain.loyalty.report import loyalty_report
from retain.loyalty.rules import parse_rules
from retain.store import Store
from store_helpers import free_port, insert_frames


def _orders(store: Store, rows: list[tuple[str, str, str, float]], **columns: list) -> None:
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "net_revenue"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    for name, values in columns.items():
        frame[name] = values
    insert_frames(store, {"orders": frame})


def test_a_ledger_by_hand(tmp_path: Path) -> None:
    """The default rules: 1 point per unit of net revenue, pending 30 days, expiring 12
    months after; a customer:

    - 2025-01-10, order o1 of 100 (later refunded 40 on 2025-01-20, within its window):
      earn 100, pending until 2025-02-09; the refund takes back 40 * 100/100 = 40.
    - 2025-03-01, order o2 of 50: earn 50, pending until 2025-03-31.
    - 2025-03-05, order o3 of 20, refunded 20 on 2025-04-10, after its window (04-04):
      earn 20, nothing taken back.
    - at 2025-03-15: spendable 100 - 40 = 60; pending 50 + 20 = 70. Redeem 30: 30 left;
      31 more is refused; the same request again changes nothing.
    - at 2026-03-01: o1's lot (60, 30 of it redeemed) expired on 2026-02-09: -30.
      Spendable 50 + 20 = 70 (o3's 20 spendable since 2025-04-04), expiring 2026-03-31
      (50) and 2026-04-04 (20); pending 0.
    """
    db = people_store(tmp_path / "s.duckdb", [person("a")], orders=[])
    with Store(db) as store:
        store.con.execute("DELETE FROM orders")
        _orders(
            store,
            [
                ("o1", "a", "2025-01-10 12:00:00", 60.0),
                ("o2", "a", "2025-03-01 12:00:00", 50.0),
                ("o3", "a", "2025-03-05 12:00:00", 0.0),
            ],
            refunded=[40.0, 0.0, 20.0],
        )
        store.con.execute(
            "INSERT INTO order_refunds VALUES ('o1', 'a', '2025-01-20 09:00', 40, 'USD', "
            "'r.csv', 2), ('o3', 'a', '2025-04-10 09:00', 20, 'USD', 'r.csv', 3)"
        )
        set_setting(store, "as_of", "2025-03-15")
        first = build(store)
        assert first.added == {"earn": 3, "reverse": 1, "birthday": 0, "referral": 0, "expire": 0}
        now = balance(store, "a")
        assert (now.balance, now.pending) == (60, 70)
        assert now.value == 0.6
        done = write_entry(store, "a", -30, kind="redeem", key="k1")
        assert done["balance"] == 30 and not done["replayed"]
        again = write_entry(store, "a", -30, kind="redeem", key="k1")
        assert again["replayed"] and again["balance"] == 30
        with pytest.raises(KeyReused, match="another request"):
            write_entry(store, "a", -5, kind="redeem", key="k1")
        with pytest.raises(
            NotEnoughPoints,
            match=r"has 30 to spend \(70 more pending until their return windows close\), 31 asked",
        ):
            write_entry(store, "a", -31, kind="redeem", key="k2")
        assert build(store).added == dict.fromkeys(
            ("earn", "reverse", "birthday", "referral", "expire"), 0
        )  # a second build adds nothing
        set_setting(store, "as_of", "2026-03-01")
        later = build(store)
        assert later.added["expire"] == 1
        now = balance(store, "a")
        assert (now.balance, now.pending) == (70, 0)
        assert now.expiring == [
            {"expires_at": "2026-03-31 12:00:00", "points": 50},
            {"expires_at": "2026-04-04 12:00:00", "points": 20},
        ]
        total = store.scalar("SELECT sum(points) FROM loyalty_ledger WHERE customer_id = 'a'")
        assert total == now.balance  # the balance is the sum of the ledger
        report = loyalty_report(store)
    assert report["liability"] == {
        "points": 70,
        "spendable": 70,
        "pending": 0,
        "value": 0.7,
        "never_expires": 0,
        "expiring": [
            {"month": "2026-03", "points": 50, "value": 0.5},
            {"month": "2026-04", "points": 20, "value": 0.2},
        ],
    }
    assert report["cost"]["points_redeemed"] == 30


def test_points_expire_oldest_first_around_redemptions(tmp_path: Path) -> None:
    """No pending period, 1 month to expire. Lots: 100 on 01-01 (expires 02-01), 50 on
    01-20 (expires 02-20). Redeem 120 on 01-25: 100 from the first lot, 20 from the
    second. On 02-01 the first lot has nothing left (0 expire); on 02-20 the second's 30
    expire. Balance at 03-01: 0."""
    rules = parse_rules("[points]\npending_days = 0\nexpire_months = 1\n")
    db = people_store(tmp_path / "s.duckdb", [person("a")], orders=[])
    with Store(db) as store:
        store.con.execute("DELETE FROM orders")
        _orders(store, [("o1", "a", "2025-01-01 10:00:00", 100.0)])
        set_setting(store, "as_of", "2025-01-25")
        build(store, rules)
        _orders(store, [("o2", "a", "2025-01-20 10:00:00", 50.0)])
        build(store)
        assert balance(store, "a").balance == 150
        write_entry(store, "a", -120, kind="redeem", key="r")
        set_setting(store, "as_of", "2025-03-01")
        build(store)
        expired = store.con.execute(
            "SELECT lot, points FROM loyalty_ledger WHERE kind = 'expire' ORDER BY lot"
        ).fetchall()
        assert expired == [("earn/o2", -30)]
        assert balance(store, "a").balance == 0


def _referral_store(tmp_path: Path) -> tuple[Path, str]:
    people = [
        person("r", email="Ref.Errer+shop@gmail.com"),
        person("twin", email="referrer@gmail.com"),
    ]
    people += [person(f"f{i:02d}") for i in range(14)]
    db = people_store(tmp_path / "s.duckdb", people, orders=[])
    with Store(db) as store:
        store.con.execute("DELETE FROM orders")
        _orders(store, [("r1", "r", "2024-12-01 10:00:00", 80.0)])
        set_setting(store, "as_of", "2024-12-31")
        build(store)
        code = store.scalar("SELECT code FROM loyalty_members WHERE customer_id = 'r'")
    return db, code


def test_referrals_are_capped_at_ten_a_year_and_guarded(tmp_path: Path) -> None:
    """Twelve friends order in 2025 with r's code (one a day from 1 February); the reward
    (5,000 points) waits for their 30-day return window; ten are rewarded, the eleventh
    and twelfth are refused (the cap). A friend with r's address written another way is a
    self-referral; r's own code on r's own next order is not a referral at all (not a first
    order); a friend whose first order was refunded in full gets nothing; a friend still
    in the window waits."""
    db, code = _referral_store(tmp_path)
    assert code.startswith("REF-") and len(code) == 16
    with Store(db) as store:
        rows = [
            (f"x{i:02d}", f"f{i:02d}", f"2025-02-{1 + i:02d} 10:00:00", 30.0) for i in range(12)
        ]
        rows += [
            ("t1", "twin", "2025-02-20 10:00:00", 30.0),
            ("r2", "r", "2025-03-01 10:00:00", 20.0),
        ]
        rows += [("late", "f13", "2025-06-20 10:00:00", 30.0)]
        _orders(store, rows, discount_code=[code.lower()] * len(rows))
        refunded = pd.DataFrame(
            {
                "order_id": ["x12"],
                "customer_id": ["f12"],
                "ordered_at": [pd.Timestamp("2025-02-25 10:00")],
                "net_revenue": [0.0],
                "refunded": [30.0],
                "discount_code": [code],
                "status": ["refunded"],
                "reason": ["refunded in full"],
            }
        )
        insert_frames(store, {"excluded_orders": refunded})
        set_setting(store, "as_of", "2025-07-01")
        built = build(store)
        decided = dict(
            store.con.execute(
                "SELECT friend_id, status || ': ' || coalesce(reason, '') FROM loyalty_referrals"
            ).fetchall()
        )
        rewards = store.scalar(
            "SELECT sum(points) FROM loyalty_ledger WHERE customer_id = 'r' AND kind = 'referral'"
        )
    assert rewards == 10 * 5000
    rewarded = sorted(f for f, s in decided.items() if s.startswith("rewarded"))
    assert rewarded == [f"f{i:02d}" for i in range(10)]  # the first ten of the year
    assert decided["f10"] == "refused: the referrer's cap of 10 rewarded friends in 2025 is reached"
    assert decided["f11"].startswith("refused: the referrer's cap")
    assert decided["twin"] == "refused: self-referral: the same e-mail address as the referrer"
    assert decided["f12"] == "refused: the friend's first order was refunded"
    assert decided["f13"] == "waiting: until the first order is past its return window, 2025-07-20"
    assert "r" not in decided
    assert built.referrals == {"rewarded": 10, "refused": 4, "waiting": 1}
    result = CliRunner().invoke(app, ["loyalty", "referral", code, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["customer_id"] == "r"


def test_a_tier_is_kept_through_the_grace_period(tmp_path: Path) -> None:
    """Silver from 250 of net spend over 12 months, 30 days of grace: 300 spent on
    2024-03-01 is Silver until it falls out of the 12 months on 2025-03-01, then kept
    until 2025-03-31, then gone; each change is recorded."""
    db = people_store(tmp_path / "s.duckdb", [person("a"), person("b")], orders=[])
    with Store(db) as store:
        store.con.execute("DELETE FROM orders")
        _orders(
            store,
            [("a1", "a", "2024-03-01 10:00:00", 300.0), ("b1", "b", "2024-03-01 10:00:00", 100.0)],
        )
        seen = []
        for day in ("2024-06-01", "2025-03-10", "2025-04-02"):
            set_setting(store, "as_of", day)
            build(store)
            seen.append(
                store.con.execute(
                    "SELECT tier, qualifies_for FROM loyalty_members WHERE customer_id = 'a'"
                ).fetchall()[0]
            )
        changes = store.con.execute(
            "SELECT from_tier, to_tier FROM loyalty_tier_changes WHERE customer_id = 'a' "
            "ORDER BY changed_at"
        ).fetchall()
        assert balance(store, "a").tier is None
    assert seen == [("Silver", "Silver"), ("Silver", None), (None, None)]
    assert changes == [(None, "Silver"), ("Silver", None)]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[points]\nper_unit = -1\n", "line 2: [points] per_unit: -1, expected from 0"),
        ("[points]\ncolour = 1\n", "line 2: [points] colour: unknown key"),
        ("[prizes]\nx = 1\n", "line 1: [prizes]: unknown table"),
        ("[points]\npending_days = 2.5\n", "pending_days: 2.5, expected a whole number"),
        (
            '[[tier]]\nname = "Gold"\nthreshold = 100\n[[tier]]\nname = "Silver"\nthreshold = 50\n',
            "line 6: [[tier]] 2 threshold: 50 is not above Gold's 100",
        ),
        ('[[tier]]\nname = "Gold"\n', "line 1: [[tier]] 1: no threshold"),
        ('[referrals]\ncode_prefix = "R E F"\n', "code_prefix: 'R E F', expected 1 to 12"),
        ("[tiers]\nbasis = 'visits'\n", "basis: 'visits', expected 'spend' or 'points'"),
        ("[points\n", "not valid TOML"),
        ("tier = [1]\n", "[[tier]] 1: 1 is not a table"),
    ],
)
def test_a_mistake_in_the_rules_names_its_line_and_key(text: str, words: str) -> None:
    with pytest.raises(DataError) as caught:
        parse_rules(text, "loyalty.toml")
    assert str(caught.value).startswith("file loyalty.toml: "), str(caught.value)
    assert words in str(caught.value)


def test_the_cli_builds_reports_and_redeems(tmp_path: Path) -> None:
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a")],
        orders=[
            ("o1", "a", "2025-01-10 12:00:00", 250.0),
            ("o2", "a", "2025-05-01 12:00:00", 10.0),
        ],
    )
    runner = CliRunner()

    def run(*args: str) -> dict:
        result = runner.invoke(app, ["loyalty", *args, "--db", str(db), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert run("build")["added"]["earn"] == 2
    assert run("report")["liability"]["points"] == 260
    assert run("balance", "a")["balance"] == 250
    redeemed = run("redeem", "a", "100", "--idempotency-key", "till-42")
    assert redeemed["balance"] == 150
    assert run("redeem", "a", "100", "--idempotency-key", "till-42")["replayed"]
    refused = runner.invoke(
        app, ["loyalty", "redeem", "a", "500", "--idempotency-key", "k", "--db", str(db)]
    )
    assert refused.exit_code != 0 and "has 150 to spend (10 more pending" in refused.output
    unknown = runner.invoke(app, ["loyalty", "balance", "zz", "--db", str(db)])
    assert unknown.exit_code != 0 and "no such customer" in unknown.output
    adjusted = run("adjust", "a", "-50", "--reason", "goodwill reversed", "--idempotency-key", "j")
    assert adjusted["balance"] == 100


def test_fifty_concurrent_redemptions_spend_the_balance_once(tmp_path: Path) -> None:
    """A balance of 100; 50 requests at once through `retain serve`, each to spend 10
    with its own key: exactly 10 are answered 200, 40 are 409 with the reason, and the
    ledger ends at 0 with 10 redemptions."""
    db = people_store(
        tmp_path / "s.duckdb", [person("a")], orders=[("o1", "a", "2025-01-10 12:00:00", 100.0)]
    )
    with Store(db) as store:
        build(store, parse_rules("[points]\npending_days = 0\n"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "retain.cli", "serve", "--db", str(db), "--port", str(port)],
        env={**os.environ, "RETAIN_API_KEY": "a-long-enough-secret-key"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/status", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.2)

        def redeem(i: int) -> tuple[int, dict]:
            body = json.dumps({"points": 10, "idempotency_key": f"k{i}"}).encode()
            request = urllib.request.Request(
                base + "/api/loyalty/customers/a/redeem",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-API-Key": "a-long-enough-secret-key",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(redeem, range(50)))
        with urllib.request.urlopen(base + "/api/loyalty/customers/a") as response:
            after = json.loads(response.read())
        again = redeem(0)  # k0 again: answered as before if it was spent, else refused
    finally:
        server.terminate()
        server.wait(timeout=30)
    codes = [code for code, _ in answers]
    assert codes.count(200) == 10 and codes.count(409) == 40, codes
    refusals = {body["detail"] for code, body in answers if code == 409}
    assert all("not enough points" in r for r in refusals), refusals
    assert after["balance"] == 0
    assert sorted(body["balance"] for code, body in answers if code == 200) == list(
        range(0, 100, 10)
    )
    assert again[0] in (200, 409) and (again[0] == 409 or again[1]["replayed"])
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM loyalty_ledger WHERE kind = 'redeem'") == 10


def test_a_campaign_fires_when_a_customer_enters_a_tier(tmp_path: Path) -> None:
    """After a build puts a in Silver, a tier_entered campaign sends a (and not b) a
    message that reads the tier, its discount, the points and the referral code."""
    from retain.campaigns import run_campaigns
    from retain.campaigns.definitions import parse_campaigns

    db = people_store(
        tmp_path / "s.duckdb",
        [person("a"), person("b")],
        orders=[
            ("a1", "a", "2025-05-01 10:00:00", 300.0),
            ("b1", "b", "2025-05-01 10:00:00", 40.0),
        ],
    )
    text = f"""
[defaults]
sender = "Shop <shop@example.com>"
unsubscribe_url = "http://127.0.0.1:8765/unsubscribe"
outbox_dir = "{tmp_path / "outbox"}"

[[campaign]]
name = "welcome-silver"
trigger = {{ kind = "tier_entered", tier = "Silver" }}
channel = "file"
subject = "Welcome to {{{{ customer.tier }}}}"
text = "{{{{ customer.tier_discount }}}}% off; {{{{ customer.points }}}} points; code {{{{ customer.referral_code }}}}. {{{{ unsubscribe_url }}}}"
"""
    with Store(db) as store:
        set_setting(store, "as_of", "2025-06-15")
        build(store)
        code = store.scalar("SELECT code FROM loyalty_members WHERE customer_id = 'a'")
        result = run_campaigns(store, parse_campaigns(text), now="2025-06-15T12:00:00")
        sent = store.con.execute(
            "SELECT customer_id, subject, body_text FROM campaign_outbox"
        ).fetchall()
        again = run_campaigns(store, parse_campaigns(text), now="2025-06-15T13:00:00")
    assert result.counts["sent"] == 1 and again.counts["sent"] == 0
    ((customer, subject, body),) = sent
    assert customer == "a" and subject == "Welcome to Silver"
    assert body.startswith(f"5.0% off; 300 points; code {code}.")
    # a year on, a falls out of Silver (after the grace period): tier_left fires once
    left = text.replace("welcome-silver", "miss-silver").replace("tier_entered", "tier_left")
    with Store(db) as store:
        set_setting(store, "as_of", "2026-06-15")
        build(store)
        gone = run_campaigns(store, parse_campaigns(left), now="2026-06-15T12:00:00")
        who = store.con.execute(
            "SELECT customer_id FROM campaign_outbox WHERE campaign = 'miss-silver'"
        ).fetchall()
    assert gone.counts["sent"] == 1 and who == [("a",)]


def test_the_report_compares_members_with_matched_customers(tmp_path: Path) -> None:
    """200 customers with the same two orders in 2024; 50 redeem points in January 2025
    (members). In the 180 days from 1 January the members order twice (40 each), the
    others alternately once or not at all: 80 against 20, a difference of 60 whose
    interval holds it. The comparison is on the Loyalty page too."""
    from fastapi.testclient import TestClient

    from retain.service import create_app

    ids = [f"c{i:03d}" for i in range(200)]
    history = [(f"{c}-{k}", c, f"2024-0{3 + 3 * k}-01 10:00:00", 40.0) for c in ids for k in (0, 1)]
    db = people_store(tmp_path / "s.duckdb", [person(c) for c in ids], orders=history)
    with Store(db) as store:
        set_setting(store, "as_of", "2025-01-15")
        build(store)
        for c in ids[:50]:
            write_entry(store, c, -50, kind="redeem", key=f"join-{c}")
        later = [
            (f"{c}-m{k}", c, f"2025-0{2 + k}-10 10:00:00", 40.0) for c in ids[:50] for k in (0, 1)
        ]
        later += [(f"{c}-o", c, "2025-03-10 10:00:00", 40.0) for c in ids[50::2]]
        _orders(store, later)
        set_setting(store, "as_of", "2025-08-01")
        build(store)
        report = loyalty_report(store)
    effect = report["effect"]
    assert effect["members"]["members"] == 50 and effect["members"]["compared_with"] == 150
    revenue = effect["members"]["measures"]["revenue"]
    assert revenue["members"] == pytest.approx(80) and revenue["matched"] == pytest.approx(20)
    assert revenue["interval"][0] < 60 < revenue["interval"][1]
    assert revenue["interval"][0] > 40  # the others' spread is known: 20 +- 20 over 150
    assert effect["sentences"][0].startswith("Members spent 60.00 more (")
    assert report["cost"]["points_redeemed"] == 50 * 50
    with TestClient(create_app(db, warm=False), client=("127.0.0.1", 5000)) as client:
        page = client.get("/loyalty").text
    assert effect["sentences"][0].split(" (")[0] in page


def test_a_recorded_referral_counts_and_fingerprints_guard(tmp_path: Path) -> None:
    """A friend recorded with r's code (a sign-up link) whose first order carries no code
    is rewarded; a friend with r's payment fingerprint is refused as a self-referral; the
    record of another code for the same friend is refused."""
    db, code = _referral_store(tmp_path)
    with Store(db) as store:
        store.con.execute(
            "UPDATE customers SET payment_fingerprint = 'card-77' WHERE customer_id IN ('r', 'f01')"
        )
        runner = CliRunner()
        recorded = runner.invoke(app, ["loyalty", "refer", code, "f00", "--db", str(db), "--json"])
    assert recorded.exit_code == 0, recorded.output
    assert json.loads(recorded.stdout) == {
        "friend_id": "f00",
        "code": code,
        "referrer_id": "r",
        "new": True,
    }
    with Store(db) as store:
        from retain.loyalty.referrals import record_referral

        assert not record_referral(store, code.lower(), "f00")["new"]
        _orders(store, [("w1", "twin", "2024-12-02 10:00:00", 10.0)])
        build(store)
        other = store.scalar("SELECT code FROM loyalty_members WHERE customer_id = 'twin'")
        with pytest.raises(KeyReused, match="already recorded"):
            record_referral(store, other, "f00")
        _orders(
            store,
            [
                ("a0", "f00", "2025-02-01 10:00:00", 30.0),
                ("a1", "f01", "2025-02-02 10:00:00", 30.0),
            ],
            discount_code=[None, code],
        )
        set_setting(store, "as_of", "2025-04-01")
        build(store)
        decided = dict(
            store.con.execute(
                "SELECT friend_id, status || ': ' || coalesce(reason, '') FROM loyalty_referrals"
            ).fetchall()
        )
    assert decided == {
        "f00": "rewarded: ",
        "f01": "refused: self-referral: the same payment fingerprint as the referrer",
    }


def test_an_order_refunded_in_full_keeps_no_points(tmp_path: Path) -> None:
    """o1 (80) earns 80 pending; a full refund within its window moves it out of the
    purchases, and the next build takes the 80 back; o2, refunded in full before any
    build, never earns."""
    db = people_store(tmp_path / "s.duckdb", [person("a")], orders=[])
    with Store(db) as store:
        store.con.execute("DELETE FROM orders")
        _orders(store, [("o1", "a", "2025-03-01 10:00:00", 80.0)])
        set_setting(store, "as_of", "2025-03-05")
        build(store)
        assert balance(store, "a").pending == 80
        gone = pd.DataFrame(
            {
                "order_id": ["o1", "o2"],
                "customer_id": ["a", "a"],
                "ordered_at": pd.to_datetime(["2025-03-01 10:00", "2025-03-02 10:00"]),
                "net_revenue": [0.0, 0.0],
                "refunded": [80.0, 50.0],
                "status": ["refunded", "refunded"],
                "reason": ["refunded in full"] * 2,
            }
        )
        store.con.execute("DELETE FROM orders WHERE order_id = 'o1'")
        insert_frames(store, {"excluded_orders": gone})
        store.con.execute(
            "INSERT INTO order_refunds VALUES ('o1', 'a', '2025-03-04 09:00', 80, 'USD', 'r.csv', 2)"
        )
        _orders(store, [("o3", "a", "2025-03-03 10:00:00", 10.0)])
        build(store)
        now = balance(store, "a")
        entries = {e["entry_id"]: e["points"] for e in now.entries}
    assert (now.balance, now.pending) == (0, 10)
    assert entries["earn/o1"] == 80 and sum(v for k, v in entries.items() if "o1" in k) == 0
    assert not any("o2" in k for k in entries)


def test_no_write_can_take_a_balance_below_zero(tmp_path: Path) -> None:
    """From an adversarial pass: c1 earns 100 + 50 net and spends all 150 by 2025-06-30.
    Then (a) the clock set back to April refuses a build and a redemption, instead of
    showing the 150 again to spend twice; (b) a refund of o1 written into its order row
    late (learned after its window closed, when the points were spent) takes nothing back;
    (c) the same refund rows read again from other rows of a file take nothing more; (d)
    one idempotency key cannot serve a redemption and then an adjustment."""
    db = people_store(tmp_path / "s.duckdb", [person("c1")], orders=[])
    with Store(db) as store:
        store.con.execute("DELETE FROM orders")
        _orders(
            store,
            [("o1", "c1", "2025-01-10 12:00:00", 100.0), ("o2", "c1", "2025-03-01 12:00:00", 50.5)],
        )
        store.con.execute(
            "INSERT INTO order_refunds VALUES ('o2', 'c1', '2025-03-05 09:00', 10.1, 'USD', "
            "'r.csv', 2)"
        )
        store.con.execute("UPDATE orders SET refunded = 10.1 WHERE order_id = 'o2'")
        set_setting(store, "as_of", "2025-06-30")
        build(store)
        # o2 earns 60 (50.5 + 10.1 refunded), its refund takes round(60 * 10.1 / 60.6) = 10
        assert balance(store, "c1").balance == 100 + 60 - 10
        write_entry(store, "c1", -150, kind="redeem", key="k1")
        set_setting(store, "as_of", "2025-04-30")
        with pytest.raises(DataError, match="cannot be written at an earlier moment"):
            build(store)
        with pytest.raises(DataError, match="cannot be written at an earlier moment"):
            write_entry(store, "c1", -10, kind="redeem", key="k2")
        set_setting(store, "as_of", "2025-07-01")
        store.con.execute("UPDATE orders SET refunded = 50 WHERE order_id = 'o1'")
        store.con.execute(
            "UPDATE order_refunds SET row_number = 7, source_file = 'again.csv' WHERE order_id = 'o2'"
        )
        assert build(store).added["reverse"] == 0
        assert balance(store, "c1").balance == 0
        with pytest.raises(KeyReused, match="redeem of -150 points"):
            write_entry(store, "c1", 5, kind="adjust", key="k1", reason="goodwill")
        with pytest.raises(DataError, match="at most 1,000,000,000,000"):
            write_entry(store, "c1", 10**13, kind="adjust", key="big", reason="x")
        total = store.scalar("SELECT sum(points) FROM loyalty_ledger WHERE customer_id = 'c1'")
    assert total == 0


def test_odd_requests_get_clear_answers(tmp_path: Path) -> None:
    """A tier from 0 holds every customer; a rules file written where there is no folder,
    a customer referring themselves or an old customer, a birthday bonus asked by hand,
    points sent as text: each is refused with a message, not a traceback."""
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a"), person("b"), person("new")],
        orders=[("a1", "a", "2024-01-10 12:00:00", 10.0), ("b1", "b", "2025-01-10 12:00:00", 5.0)],
    )
    rules = parse_rules('[[tier]]\nname = "Member"\nthreshold = 0\n')
    with Store(db) as store:
        set_setting(store, "as_of", "2025-06-30")
        build(store, rules)
        tiers = dict(store.con.execute("SELECT customer_id, tier FROM loyalty_members").fetchall())
        code = store.scalar("SELECT code FROM loyalty_members WHERE customer_id = 'a'")
        from retain.loyalty.referrals import record_referral

        with pytest.raises(DataError, match="cannot refer themselves"):
            record_referral(store, code, "a")
        with pytest.raises(DataError, match="has been a customer since 2025-01-10"):
            record_referral(store, code, "b")
        assert record_referral(store, code, " new ")["friend_id"] == "new"
    assert tiers == {"a": "Member", "b": "Member", "new": "Member"}  # a: nothing in 12 months
    runner = CliRunner()
    made = runner.invoke(app, ["loyalty", "init", "--out", str(tmp_path / "no" / "x.toml")])
    assert made.exit_code != 0 and "cannot write" in made.output
    from fastapi.testclient import TestClient

    from retain.service import create_app

    key = "a-long-enough-secret-key"
    with TestClient(create_app(db, warm=False, api_key=key), client=("127.0.0.1", 5000)) as client:
        headers = {"X-API-Key": key}
        text = client.post(
            "/api/loyalty/customers/a/redeem",
            json={"points": "1", "idempotency_key": "t"},
            headers=headers,
        )
        birthday = client.post(
            "/api/loyalty/customers/a/earn",
            json={"reason": "birthday", "idempotency_key": "b"},
            headers=headers,
        )
        before = client.get("/api/loyalty").json()["cost"]["points_redeemed"]
        review = client.post(
            "/api/loyalty/customers/a/earn",
            json={"reason": "review", "idempotency_key": "r"},
            headers=headers,
        )
        client.post(
            "/api/loyalty/customers/a/redeem",
            json={"points": 20, "idempotency_key": "spend"},
            headers=headers,
        )
        after = client.get("/api/loyalty").json()["cost"]["points_redeemed"]  # not the cached
    assert (before, after) == (0, 20)
    assert text.status_code == 422
    assert birthday.status_code == 422 and "no such bonus" in birthday.json()["detail"]
    assert review.status_code == 200 and review.json()["points"] == 50


def test_tiers_on_points_earned_count_bonuses_and_reversals(tmp_path: Path) -> None:
    """basis = "points": a earns 200 on an order and 100 on a birthday (300, Silver from
    250); b earns 300 but a refund within the window takes back 100 (200: no tier)."""
    rules = parse_rules('[tiers]\nbasis = "points"\n[[tier]]\nname = "Silver"\nthreshold = 250\n')
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a", birthday="1990-04-01"), person("b")],
        orders=[
            ("a1", "a", "2025-03-01 10:00:00", 200.0),
            ("b1", "b", "2025-03-01 10:00:00", 200.0),
        ],
    )
    with Store(db) as store:
        store.con.execute("UPDATE orders SET refunded = 100 WHERE order_id = 'b1'")
        set_setting(store, "as_of", "2025-06-30")
        build(store, rules)
        tiers = dict(store.con.execute("SELECT customer_id, tier FROM loyalty_members").fetchall())
        points = dict(
            store.con.execute(
                "SELECT customer_id, sum(points) FROM loyalty_ledger GROUP BY ALL"
            ).fetchall()
        )
    assert points == {"a": 300, "b": 200}
    assert tiers == {"a": "Silver", "b": None}


def _busy_ledger(tmp_path: Path) -> Path:
    """120 customers over 2024-2025 (some refunded in part, some in full, birthdays),
    points pending 14 days and expiring after 6 months, built at 2025-06-30, then
    redemptions by hand."""
    import random

    pick = random.Random(7)
    people = [
        person(f"c{i}", birthday=f"19{70 + i % 30}-0{1 + i % 9}-1{i % 10}") for i in range(120)
    ]
    orders = []
    for i in range(120):
        for j in range(pick.randint(1, 6)):
            day = dt.date(2024, 1, 1) + dt.timedelta(days=pick.randint(0, 545))
            orders.append((f"o{i}-{j}", f"c{i}", f"{day} 1{j}:00:00", pick.randint(5, 400)))
    db = people_store(tmp_path / "s.duckdb", people, orders=orders)
    rules = parse_rules("[points]\npending_days = 14\nexpire_months = 6\n[bonus]\nbirthday = 25\n")
    with Store(db) as store:
        store.con.execute(
            "UPDATE orders SET refunded = round(net_revenue / 3, 2) WHERE hash(order_id) % 5 = 0"
        )
        set_setting(store, "as_of", "2025-06-30")
        build(store, rules)
        for i in range(0, 120, 3):
            spendable = balance(store, f"c{i}").balance
            if spendable >= 2:
                write_entry(store, f"c{i}", -(spendable // 2), kind="redeem", key=f"r{i}")
    return db


def test_balances_in_memory_agree_with_the_ledger(tmp_path: Path) -> None:
    """Every member's balance from the in-memory figures (what the service answers a
    lookup with) equals the one read from the ledger: at the build's clock, and at later
    clocks with points turned spendable and expiries due but not written, where a figure
    that no longer holds is refused rather than given."""
    from retain.loyalty.build import current_rules
    from retain.loyalty.ledger import balances

    db = _busy_ledger(tmp_path)
    with Store(db) as store:
        rules = current_rules(store)  # the latest build's, as a lookup reads them
        answered = {}
        for day in ("2025-06-30", "2025-07-05", "2025-08-20", "2026-02-01"):
            set_setting(store, "as_of", day)
            now = dt.datetime.combine(dt.date.fromisoformat(day), dt.time.max)
            held = balances(store.con, now)
            later = now + dt.timedelta(days=3)
            answered[day] = 0
            for customer in held.position:
                fast = held.answer(customer, now, rules)
                slow = balance(store, customer, history=0, now=now, rules=rules).to_dict()
                assert fast == slow, customer
                answered[day] += 1
                moved = held.answer(customer, later, rules)
                if moved is not None:  # still held three days on: then it is still right
                    assert moved == balance(store, customer, history=0, now=later).to_dict()
            assert held.answer("nobody", now, rules) is None
        sums = dict(
            store.con.execute(
                "SELECT customer_id, sum(points) FROM loyalty_ledger WHERE available_at <= ? "
                "GROUP BY ALL",
                [now],
            ).fetchall()
        )
    assert answered == dict.fromkeys(answered, 120)
    # at the last clock, expiries were due and not written (no build): taken off the sums
    behind = [c for c, at in held.position.items() if held.spendable[at] < sums.get(c, 0)]
    assert len(behind) > 20


def test_a_balance_lookup_is_answered_from_memory_until_a_write(tmp_path: Path) -> None:
    """The service answers a lookup from memory once its start-up work is done, the same
    answer as the ledger's; after a redemption through the API the customer's lookups read
    the ledger (the new balance), the others' stay in memory."""
    from fastapi.testclient import TestClient

    from retain.service import api, create_app

    db = _busy_ledger(tmp_path)
    key = "a-long-enough-secret-key"
    with TestClient(create_app(db, api_key=key), client=("127.0.0.1", 5000)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        assert service.warmed.wait(60)
        answered = client.get("/api/loyalty/customers/c1")  # before the routes
        routed = client.get("/api/loyalty/customers/c1", params={"history": 0})
        assert answered.content == routed.content
        assert answered.headers["content-type"] == routed.headers["content-type"]
        first = answered.json()
        assert api.points_in_memory(service, "c1", 0) == first
        assert api.points_in_memory(service, "c1", 3) is None  # entries: from the ledger
        listed = client.get("/api/loyalty/customers/c1?history=3").json()
        assert {**listed, "entries": []} == first
        assert len(listed["entries"]) == 3
        spent = client.post(
            "/api/loyalty/customers/c1/redeem",
            json={"points": 1, "idempotency_key": "one"},
            headers={"X-API-Key": key},
        )
        assert spent.status_code == 200, spent.text
        assert api.points_in_memory(service, "c1", 0) is None
        assert api.points_in_memory(service, "c2", 0) is not None
        after = client.get("/api/loyalty/customers/c1").json()
        unknown = client.get("/api/loyalty/customers/nobody")
    assert after["balance"] == first["balance"] - 1
    assert unknown.status_code == 404 and "no such customer" in unknown.json()["detail"]


def test_tier_benefits_reach_the_recommendations(tmp_path: Path) -> None:
    """vip spent 900 in 12 months: Gold (from 500: 10% off, free shipping). Their
    recommendations (the customer API and page, and a campaign's template) carry each
    product's price, the median paid, and the member price 10% below it; a customer
    without a tier sees the price alone."""
    from fastapi.testclient import TestClient

    from retain.campaigns import preview
    from retain.campaigns.definitions import parse_campaigns
    from retain.service import create_app

    people = [person(f"c{i:02d}") for i in range(30)] + [person("vip")]
    orders = [(f"o{i:02d}", f"c{i:02d}", "2025-05-01 10:00:00", 30.0) for i in range(30)]
    orders.append(("v1", "vip", "2025-05-02 10:00:00", 900.0))
    db = people_store(tmp_path / "s.duckdb", people, orders=orders)
    lines = [(f"o{i:02d}", "TENT", "Tent", 20.0 + i % 3) for i in range(30)]
    lines += [(f"o{i:02d}", "STAKES", "Stakes", 7.99) for i in range(30)]
    lines += [(f"o{i:02d}", "MAT", "Mat", 12.5) for i in range(0, 30, 3)]
    lines += [("v1", "TENT", "Tent", 21.0)]
    frame = pd.DataFrame(lines, columns=["order_id", "sku", "name", "unit_price"])
    rules = parse_rules(
        '[[tier]]\nname = "Gold"\nthreshold = 500\ndiscount = 10\nfree_shipping = true\n'
    )
    template = (
        "{% for p in recommendations %}{{ p.sku }}={{ p.price }}/"
        "{{ p.member_price | default('none') }} {% endfor %}"
    )
    text = f"""
[defaults]
sender = "Shop <shop@example.com>"
unsubscribe_url = "http://127.0.0.1:8765/unsubscribe"

[[campaign]]
name = "picks"
trigger = "birthday"
subject = "For you"
text = "{template} {{{{ unsubscribe_url }}}}"
"""
    with Store(db) as store:
        insert_frames(store, {"order_lines": frame})
        set_setting(store, "as_of", "2025-06-30")
        build(store, rules)
    with Store(db, read_only=True) as store:
        mail = {
            who: preview(store, parse_campaigns(text), "picks", who)[0] for who in ("vip", "c01")
        }
    offered = dict(p.split("=") for p in mail["vip"]["body_text"].split(" http")[0].split())
    assert offered["STAKES"] == "7.99/7.19" and offered["MAT"] == "12.5/11.25"
    assert mail["c01"]["body_text"].split()[0].endswith("/none")
    with TestClient(create_app(db, warm=False), client=("127.0.0.1", 5000)) as client:
        vip = client.get("/api/customers/vip").json()["recommendations"]
        other = client.get("/api/customers/c01").json()["recommendations"]
        page = client.get("/customers/vip").text
    assert vip["tier"] == {
        "name": "Gold",
        "discount": 10.0,
        "free_shipping": True,
        "early_access": False,
    }
    prices = {i["sku"]: (i["price"], i["member_price"]) for i in vip["items"]}
    assert prices["STAKES"] == (7.99, 7.19) and prices["MAT"] == (12.5, 11.25)
    assert other["tier"] is None and all("member_price" not in i for i in other["items"])
    assert {i["sku"]: i["price"] for i in other["items"]}.get("MAT") == 12.5
    assert "<strong>Gold</strong> member: 10% off (member prices below), free shipping" in page
    assert "<s>" in page and "11.25" in page


def test_a_lookup_after_an_order_moves_the_clock_reads_the_new_clock(tmp_path: Path) -> None:
    """Without an as_of setting the ledger's clock is the end of the last order's day: an
    order written through the service moves it, and the next balance lookup answers at the
    new clock (c0's 100 points, pending until 2025-07-04, are spendable by 2025-08-01)."""
    from fastapi.testclient import TestClient

    from retain.service import create_app

    people = [person(f"c{i}") for i in range(5)]
    orders = [(f"o{i}", f"c{i}", f"2025-06-2{i} 10:00:00", 100.0) for i in range(5)]
    db = people_store(tmp_path / "s.duckdb", people, orders=orders)
    with Store(db) as store:
        build(store, parse_rules("[points]\npending_days = 14\nexpire_months = 6\n"))
    key = "a-long-enough-secret-key"
    with TestClient(create_app(db, api_key=key), client=("127.0.0.1", 5000)) as client:
        assert client.app.state.service.warmed.wait(60)  # type: ignore[attr-defined]
        before = client.get("/api/loyalty/customers/c0").json()
        written = client.post(
            "/api/orders",
            headers={"X-API-Key": key},
            json={
                "order_id": "late",
                "customer_id": "c4",
                "ordered_at": "2025-08-01T10:00:00Z",
                "net_revenue": 10,
            },
        )
        assert written.status_code == 201, written.text
        after = [client.get("/api/loyalty/customers/c0").json() for _ in range(3)]
    assert (before["at"], before["balance"], before["pending"]) == ("2025-06-24 23:59:59", 0, 100)
    assert all(
        (a["at"], a["balance"], a["pending"]) == ("2025-08-01 23:59:59", 100, 0) for a in after
    )


def test_the_balances_in_memory_are_loaded_again_after_many_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past RELOAD_AFTER_WRITES ledger writes through the service, a lookup loads the
    balances anew in the background: the customers written are answered from memory
    again, with their new balance, and the writes before the load are forgotten."""
    from fastapi.testclient import TestClient

    from retain.service import api, create_app

    monkeypatch.setattr(api, "RELOAD_AFTER_WRITES", 2)
    db = _busy_ledger(tmp_path)
    key = "a-long-enough-secret-key"
    with TestClient(create_app(db, api_key=key), client=("127.0.0.1", 5000)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        assert service.warmed.wait(60)
        before = {c: client.get(f"/api/loyalty/customers/{c}").json() for c in ("c1", "c2", "c4")}
        for n, customer in enumerate(("c1", "c2", "c4")):
            spent = client.post(
                f"/api/loyalty/customers/{customer}/redeem",
                json={"points": 1, "idempotency_key": f"k{n}"},
                headers={"X-API-Key": key},
            )
            assert spent.status_code == 200, spent.text
        assert api.points_in_memory(service, "c1", 0) is None  # starts the load
        deadline = time.monotonic() + 60
        while service.peek(api.BALANCES_KEY)[1] < 3:
            assert time.monotonic() < deadline, "the balances were not loaded again"
            time.sleep(0.05)
        again = {c: api.points_in_memory(service, c, 0) for c in before}
        assert service.ledger_written == {}
    assert {c: a["balance"] for c, a in again.items()} == {
        c: b["balance"] - 1 for c, b in before.items()
    }
