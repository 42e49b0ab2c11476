"""Experiments on a store: a planted effect recovered by `retain experiments report`, the
global control group held out of every marketing message, and tracked links."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from campaign_helpers import people_store, person
from retain.campaigns import run_campaigns
from retain.campaigns.definitions import parse_campaigns
from retain.config import set_setting
from retain.errors import ArgumentError
from retain.experiments.analysis import experiment_report
from retain.service import create_app
from retain.store import Store
from store_helpers import insert_frames

HEAD = """
[defaults]
sender = "Shop <shop@example.com>"
caps = { day = 5, week = 5, month = 8 }
unsubscribe_url = "http://127.0.0.1:8765/unsubscribe"
outbox_dir = "{outbox}"
"""


def _file(tmp_path: Path, body: str) -> object:
    text = HEAD.replace("{outbox}", str(tmp_path / "outbox")) + body
    return parse_campaigns(text, str(tmp_path / "c.toml"))


NEWS = """
[[campaign]]
name = "news"
trigger = { kind = "broadcast", at = "2025-07-01T09:00:00" }
channel = "file"
subject = "News"
text = "New this week: https://shop.example/new?from=mail Unsubscribe: {{ unsubscribe_url }}"
control_share = 0.5
"""


def test_a_planted_lift_in_orders_is_recovered(tmp_path: Path) -> None:
    """3,000 customers, half held out; after the message the treated buy at 1.5 times the
    control's rate (Poisson, 0.3 orders a week). The report's relative uplift of orders
    per customer has an interval holding +50%, and its verdict is better."""
    db = people_store(tmp_path / "s.duckdb", [person(f"c{i:04d}") for i in range(3000)])
    with Store(db) as store:
        run_campaigns(store, _file(tmp_path, NEWS), now="2025-07-01T10:00:00")
        arms = dict(
            store.con.execute(
                "SELECT customer_id, status FROM campaign_outbox WHERE campaign = 'news'"
            ).fetchall()
        )
        assert set(arms.values()) == {"sent", "control"}
        rng = np.random.default_rng(5)
        rows = []
        for cid, status in sorted(arms.items()):
            rate = 0.3 * (1.5 if status == "sent" else 1.0)
            for k in range(rng.poisson(rate)):
                day = 1 + int(rng.integers(0, 6))
                rows.append((f"after-{cid}-{k}", cid, f"2025-07-0{1 + day} 12:00:00", 30.0))
        frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "net_revenue"])
        frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
        insert_frames(store, {"orders": frame})
        report = experiment_report(store, "news", clv=False)
    assert [a["arm"] for a in report["arms"]] == ["control", "a"]
    control = report["arms"][0]
    assert abs(control["customers"] - 1500) < 150
    orders = report["comparisons"][0]["orders_per_customer"]
    base = control["orders"] / control["customers"]
    low, high = (v / base for v in orders["interval"])
    assert low < 0.5 < high
    assert orders["verdict"] == "better"
    assert report["comparisons"][0]["conversion"]["verdict"] == "better"
    assert report["added"]["revenue"] > 0
    assert report["sentence"].startswith("Variant a raised orders by")
    # the CLI, the API and the Campaigns page say the same
    from typer.testing import CliRunner

    from retain.cli import app

    cli = CliRunner().invoke(
        app, ["experiments", "report", "news", "--db", str(db), "--no-clv", "--json"]
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["sentence"] == report["sentence"]
    with TestClient(create_app(db, warm=False), client=("127.0.0.1", 5000)) as client:
        shown = client.get("/api/campaigns").json()["experiments"]
        page = client.get("/campaigns").text
    assert [e["sentence"] for e in shown] == [report["sentence"]]
    assert html.escape(report["sentence"], quote=False) in page


def test_the_global_control_group_gets_no_marketing_and_is_set_once(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person(f"c{i:04d}") for i in range(1000)])
    body = NEWS.replace("control_share = 0.5", "") + (
        '\n[[campaign]]\nname = "receipt"\ntrigger = { kind = "post_purchase", days = 0 }\n'
        'channel = "file"\ntransactional = true\nsubject = "Thanks"\ntext = "Thanks."\n'
        "catch_up_days = 60\n"
    )
    with Store(db) as store:
        set_setting(store, "global_control", 0.2)
        run_campaigns(store, _file(tmp_path, body), now="2025-07-01T10:00:00")
        found = dict(
            store.con.execute(
                "SELECT campaign || ':' || status || ':' || variant, count(*) "
                "FROM campaign_outbox GROUP BY 1"
            ).fetchall()
        )
        held = found.get("news:control:global control", 0)
        assert 150 < held < 250
        assert found["news:sent:a"] == 1000 - held
        assert found["receipt:sent:a"] == 1000  # a transactional message holds out no one
        with pytest.raises(ArgumentError, match="set once per store"):
            set_setting(store, "global_control", 0.1)
        set_setting(store, "global_control", 0.2)  # the same value is fine
        report = experiment_report(store, "news", clv=False)
    assert report["reference"] == "global control"


def test_links_are_tracked_and_lead_on(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a"), person("b")])
    with Store(db) as store:
        run_campaigns(store, _file(tmp_path, NEWS.replace("0.5", "0")), now="2025-07-01T10:00:00")
        texts = [
            r[0] for r in store.con.execute("SELECT body_text FROM campaign_outbox").fetchall()
        ]
    links = [re.search(r"http://127\.0\.0\.1:8765/click\?t=(\S+)", t) for t in texts]
    assert all(links) and "https://shop.example" not in texts[0]
    assert "/unsubscribe?token=" in texts[0]  # the unsubscribe link is left as it is
    token = links[0].group(1)  # type: ignore[union-attr]
    with TestClient(create_app(db, warm=False), client=("127.0.0.1", 5000)) as client:
        went = client.get(f"/click?t={token}", follow_redirects=False)
        assert went.status_code == 302
        assert went.headers["location"] == "https://shop.example/new?from=mail"
        forged = client.get(f"/click?t={token[:-1]}x", follow_redirects=False)
        assert forged.status_code == 400
    with Store(db, read_only=True) as store:
        clicks = store.con.execute("SELECT customer_id, url FROM campaign_clicks").fetchall()
    assert len(clicks) == 1 and clicks[0][1] == "https://shop.example/new?from=mail"


AUTO = """
[[campaign]]
name = "letter"
trigger = { kind = "broadcast", at = "2025-07-01T09:00:00" }
channel = "file"
auto_winner = { test_share = 0.3, deadline_hours = 24, metric = "clicks" }

[[campaign.variants]]
name = "plain"
subject = "News"
text = "https://shop.example/a Unsubscribe: {{ unsubscribe_url }}"

[[campaign.variants]]
name = "bold"
subject = "NEWS!"
text = "https://shop.example/b Unsubscribe: {{ unsubscribe_url }}"
"""


def _statuses(store: Store) -> dict[str, int]:
    return dict(
        store.con.execute(
            "SELECT status || ':' || coalesce(variant, '-'), count(*) FROM campaign_outbox "
            "GROUP BY 1"
        ).fetchall()
    )


def test_a_newsletter_test_sends_the_winner_to_the_rest(tmp_path: Path) -> None:
    """30% get the test; when the bold variant's click rate beats the plain one's by the
    sequential rule, the waiting 70% are sent bold; undecided, they wait until the
    deadline."""
    db = people_store(tmp_path / "s.duckdb", [person(f"c{i:04d}") for i in range(2000)])
    campaigns = _file(tmp_path, AUTO)
    with Store(db) as store:
        run_campaigns(store, campaigns, now="2025-07-01T10:00:00")
        first = _statuses(store)
        assert 500 < first["sent:plain"] + first["sent:bold"] < 700
        waiting = first["waiting:-"]
        assert waiting == 2000 - first["sent:plain"] - first["sent:bold"]
        run_campaigns(store, campaigns, now="2025-07-01T11:00:00")  # no clicks: undecided
        assert _statuses(store)["waiting:-"] == waiting
        keys = store.con.execute(
            "SELECT key, customer_id, variant FROM campaign_outbox WHERE status = 'sent'"
        ).fetchall()
        rate = {"plain": 0.05, "bold": 0.25}
        clicks = [
            (key, "letter", cid, "https://shop.example/x", pd.Timestamp("2025-07-01 10:30"))
            for i, (key, cid, variant) in enumerate(keys)
            if (i * 7919 % 100) / 100 < rate[variant]
        ]
        store.con.executemany("INSERT INTO campaign_clicks VALUES (?, ?, ?, ?, ?)", clicks)
        result = run_campaigns(store, campaigns, now="2025-07-01T12:00:00")
        after = _statuses(store)
    assert "waiting:-" not in after
    assert after["sent:bold"] == first["sent:bold"] + waiting
    assert any("variant bold goes to the rest" in note for note in result.notes)


def test_an_undecided_newsletter_test_sends_the_best_so_far_at_the_deadline(
    tmp_path: Path,
) -> None:
    db = people_store(tmp_path / "s.duckdb", [person(f"c{i:04d}") for i in range(400)])
    campaigns = _file(tmp_path, AUTO)
    with Store(db) as store:
        run_campaigns(store, campaigns, now="2025-07-01T10:00:00")
        key, cid = store.con.execute(
            "SELECT key, customer_id FROM campaign_outbox "
            "WHERE status = 'sent' AND variant = 'plain' LIMIT 1"
        ).fetchall()[0]
        store.con.execute(
            "INSERT INTO campaign_clicks VALUES (?, 'letter', ?, 'https://x.example', ?)",
            [key, cid, pd.Timestamp("2025-07-01 10:30")],
        )
        run_campaigns(store, campaigns, now="2025-07-02T09:00:00")
        assert "waiting:-" in _statuses(store)  # 23 hours: still waiting
        result = run_campaigns(store, campaigns, now="2025-07-02T10:30:00")
        after = _statuses(store)
    assert "waiting:-" not in after
    assert any("not a decided winner" in note for note in result.notes)
    assert after["sent:plain"] > after.get("sent:bold", 0)


def _purchases(
    ids: list[str], rate: np.ndarray, gaps: np.ndarray, amounts: np.ndarray, tag: str
) -> pd.DataFrame:
    """Orders in the week after the message (sent 2025-07-01 10:00): customer i buys at
    ``rate[i]`` a day, at the times the unit-rate ``gaps`` give scaled by the rate (the
    same gaps at every rate, so that a higher rate means more of the same orders)."""
    times = 10 / 24 + np.cumsum(gaps, axis=1) / rate[:, None]
    row, k = np.nonzero(times < 7)
    return pd.DataFrame(
        {
            "order_id": [f"{tag}-{ids[i]}-{j}" for i, j in zip(row, k, strict=True)],
            "customer_id": [ids[i] for i in row],
            "ordered_at": pd.Timestamp("2025-07-01") + pd.to_timedelta(times[row, k], unit="D"),
            "net_revenue": amounts[row, k],
        }
    )


def test_the_change_of_clv_recovers_a_planted_factor(tmp_path: Path) -> None:
    """4,000 customers buy for a year (each at their own rate, Gamma(2, 1/60) a day);
    the store is fitted and scored, a newsletter goes to half of them, and in the week
    after it the treated buy at 1.5 times their rate. The report's change of 12-month
    CLV, treated against control, must hold what a factor of 1.5 truly adds: the mean,
    over the same customers, of their CLV at the window's end when they buy at 1.5
    times their rate minus when they buy at their rate, with the same fit (averaged
    over 8 draws of the week). Turned around, the factors whose true effect the
    interval holds make an interval of factors that must hold 1.5 and exclude 1 and 2."""
    from retain.features import summarize
    from retain.scoring import fit_store, load_fit, load_score_basis, score_store

    n = 4000
    rng = np.random.default_rng(17)
    ids = [f"c{i:04d}" for i in range(n)]
    rate = rng.gamma(2.0, 1 / 60, n)
    history = []
    for i, cid in enumerate(ids):
        day, k = float(rng.integers(0, 300)), 0
        while day < 365:
            history.append((f"h-{cid}-{k}", cid, int(day), float(rng.gamma(4, 10))))
            day, k = day + rng.exponential(1 / rate[i]), k + 1
    past = pd.DataFrame(history, columns=["order_id", "customer_id", "day", "net_revenue"])
    past["ordered_at"] = pd.Timestamp("2024-07-01 12:00") + pd.to_timedelta(past.day, unit="D")
    past = past.drop(columns="day")
    db = people_store(tmp_path / "s.duckdb", [person(c) for c in ids])
    with Store(db) as store:
        store.con.execute("DELETE FROM orders")  # people_store's one order each
        insert_frames(store, {"orders": past})
        fit_store(store, model="bgnbd")
        score_store(store)
        run_campaigns(store, _file(tmp_path, NEWS), now="2025-07-01T10:00:00")
        arms = dict(store.con.execute("SELECT customer_id, status FROM campaign_outbox").fetchall())
        treated = np.array([arms[c] == "sent" for c in ids])
        week = _purchases(
            ids,
            rate * np.where(treated, 1.5, 1.0),
            rng.exponential(size=(n, 25)),
            rng.gamma(4, 10, size=(n, 25)),
            "w",
        )
        insert_frames(store, {"orders": week})
        report = experiment_report(store, "news")
        basis = load_score_basis(store)
        model, spend, fit = load_fit(store, basis.fit_id)
    change = report["comparisons"][0]["clv_change"]
    low, high = change["interval"]
    assert change["verdict"] == "better" and change["relative"] is None
    assert report["added"]["clv"] > 0

    def clv_at_end(orders: pd.DataFrame) -> np.ndarray:
        summary = summarize(
            orders, observation_end="2025-07-08", unit=fit["unit"], grain=fit["grain"]
        )
        return np.asarray(
            model.clv(
                summary[["frequency", "recency", "T", "monetary"]],
                gamma_gamma=spend,
                horizon="12M",
                discount_rate=basis.discount_rate,
                margin=basis.margin,
            )
        )

    factors = [1.0, 1.25, 1.5, 1.75, 2.0]
    draws = np.random.default_rng(18)
    effect = np.zeros(len(factors))
    for _ in range(8):
        gaps, amounts = draws.exponential(size=(n, 25)), draws.gamma(4, 10, size=(n, 25))
        ends = [
            clv_at_end(pd.concat([past, _purchases(ids, rate * f, gaps, amounts, "o")]))
            for f in factors
        ]
        effect += [(end - ends[0]).mean() / 8 for end in ends]
    assert np.all(np.diff(effect) > 0)
    held = [f for f, e in zip(factors, effect, strict=True) if low <= e <= high]
    assert 1.5 in held and 1.0 not in held and 2.0 not in held, (low, high, effect)
