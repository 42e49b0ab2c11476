"""Subscriptions: the source (canonical and Stripe's export, bad rows set aside with
their reasons), MRR and its movements on a store worked out by hand, retention by
cohort, the survival table, and the sBG fit recovering the parameters a store was
simulated from."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import StoreError
from retain.ingest import ingest
from retain.store import Store
from retain.subscriptions import (
    cohort_retention,
    mrr_movements,
    recurring_value,
    report,
    subscribers,
    survival,
)

# a: basic 20 a month from Jan 15, upgraded to pro 50 on Mar 10, gone May 20;
# b: 240 a year from Feb 1 (20 a month); c: 30 a month Jan 5 to Feb 20, back Apr 2;
# d: two seats of 10 from Apr 1, one seat from May 1
HAND = """subscription_id,customer_id,plan,price,quantity,billing_interval,started_at,cancelled_at,status
a1,a,basic,20,,month,2024-01-15,2024-03-10,canceled
a2,a,pro,50,,month,2024-03-10,2024-05-20,canceled
b1,b,yearly,240,,annual,2024-02-01,,active
c1,c,basic,30,,month,2024-01-05,2024-02-20,canceled
c2,c,basic,30,,month,2024-04-02,,active
d1,d,seats,10,2,month,2024-04-01,2024-05-01,canceled
d2,d,seats,10,1,monthly,2024-05-01,,active
"""


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("subs")
    (folder / "subs.csv").write_text(HAND)
    with Store(folder / "s.duckdb") as store:
        done = ingest(store, folder / "subs.csv", as_of="2024-06-30")
    assert done.format == "subscriptions" and done.subscriptions == 7 and not done.quarantined
    return folder / "s.duckdb"


def test_mrr_and_its_movements_by_hand(hand: Path) -> None:
    with Store(hand, read_only=True) as store:
        table = mrr_movements(store)
    assert table["month"].tolist() == [f"2024-0{m}" for m in range(1, 7)]
    assert table["mrr"].tolist() == [50, 40, 70, 120, 60, 60]
    assert table["customers"].tolist() == [2, 2, 2, 4, 3, 3]
    assert table["new"].tolist() == [50, 20, 0, 20, 0, 0]
    assert table["reactivated"].tolist() == [0, 0, 0, 30, 0, 0]
    assert table["expansion"].tolist() == [0, 0, 30, 0, 0, 0]
    assert table["contraction"].tolist() == [0, 0, 0, 0, -10, 0]
    assert table["churned"].tolist() == [0, -30, 0, 0, -50, 0]
    moved = table[["new", "reactivated", "expansion", "contraction", "churned"]].sum(axis=1)
    np.testing.assert_allclose(np.diff(np.r_[0.0, table["mrr"]]), moved)
    assert table["new_customers"].tolist() == [2, 1, 0, 1, 0, 0]
    assert table["churned_customers"].tolist() == [0, 1, 0, 0, 1, 0]
    assert table["arpa"].iloc[3] == 30


def test_retention_by_start_cohort_by_hand(hand: Path) -> None:
    with Store(hand, read_only=True) as store:
        table = cohort_retention(store)
    first = table[table["cohort"] == "2024-01"]
    assert first["customers"].tolist() == [2, 1, 1, 2, 1, 1]
    assert first["logo_retention"].tolist() == [1, 0.5, 0.5, 1, 0.5, 0.5]
    assert first["mrr"].tolist() == [50, 20, 50, 80, 30, 30]
    np.testing.assert_allclose(first["revenue_retention"], [1, 0.4, 1, 1.6, 0.6, 0.6])
    april = table[table["cohort"] == "2024-04"]
    assert april["mrr"].tolist() == [20, 10, 10]  # d's contraction
    assert set(table["cohort"]) == {"2024-01", "2024-02", "2024-04"}


def test_the_survival_table_by_hand(hand: Path) -> None:
    """basic's January subscriptions (a1, c1) each renewed once, then ended; every one of
    them was observed for 5 whole months. c2 (April) has 2 whole months."""
    with Store(hand, read_only=True) as store:
        table = survival(store)
    january = table[(table["plan"] == "basic") & (table["cohort"] == "2024-01")]
    assert january["active"].tolist() == [2, 2, 0, 0, 0, 0]
    april = table[(table["plan"] == "basic") & (table["cohort"] == "2024-04")]
    assert april["active"].tolist() == [1, 1, 1]
    yearly = table[table["plan"] == "yearly"]
    assert yearly["period"].tolist() == [0]  # not a year yet
    assert yearly["price"].tolist() == [240.0]


def test_twenty_a_month_for_two_and_a_half_years() -> None:
    assert recurring_value(20, 30) == 600
    assert recurring_value(20, 30, 0.01) == pytest.approx(sum(20 * 1.01**-t for t in range(30)))
    assert recurring_value(20, 2.5, 0.0) == 50


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def test_the_sbg_fit_recovers_a_simulated_store(tmp_path: Path) -> None:
    """4,000 monthly subscribers, each leaving after each payment with their own chance
    drawn from Beta(0.7, 1.2), joining over 26 months: the fit on the survival table of
    every cohort recovers the parameters, and a holdout of the later periods tracks."""
    rng = np.random.default_rng(1)
    as_of = dt.date(2026, 6, 30)
    lines = ["subscription_id,customer_id,plan,price,started_at,cancelled_at"]
    for n in range(4000):
        start = dt.date(2024, 5, 1) + dt.timedelta(days=int(rng.integers(0, 790)))
        paid = min(int(rng.geometric(rng.beta(0.7, 1.2))), 600)
        end = _add_months(start, paid)
        lines.append(f"s{n},c{n},basic,20,{start},{end if end <= as_of else ''}")
    (tmp_path / "subs.csv").write_text("\n".join(lines) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "subs.csv", as_of=as_of.isoformat())
        result = report(store, margin=0.5)
    (plan,) = result["plans"]
    fit = plan["fit"]
    assert fit["model"] == "sbg", fit["choice"]  # no duration dependence planted
    assert "not significant" in fit["choice"]
    assert set(fit["candidates"]) == {"sbg", "bdw"}
    assert fit["alpha"] == pytest.approx(0.7, rel=0.12)
    assert fit["beta"] == pytest.approx(1.2, rel=0.15)
    assert not fit["alike"] and fit["mean_churn"] == pytest.approx(0.7 / 1.9, rel=0.1)
    track = plan["tracking"]
    assert plan["periods_observed"] == 25  # May 2024 to the end of June 2026
    assert track["fitted_through"] == 16  # two thirds of them
    assert track["holdout_mean_abs_error"] < 0.2
    assert any(p["holdout"] for p in track["periods"])
    value = plan["value"]
    assert value["subscribers"] == plan["active"] == result["paying_customers"]
    # each one's value: the plan's figures are their sums
    with Store(tmp_path / "s.duckdb", read_only=True) as store:
        each = subscribers(store, margin=0.5, limit=None)
        top = subscribers(store, margin=0.5, limit=5)
    assert len(each) == plan["active"] and each["value"].sum() == pytest.approx(value["total"])
    np.testing.assert_allclose(each["value"], 0.5 * each["charge"] * each["payments_to_come"])
    assert each["value"].is_monotonic_decreasing and top.equals(each.head(5))
    assert each["payments_to_come"].mean() == pytest.approx(value["mean_residual_periods"])
    # who has stayed longer has more to come: the ones likely to cancel have gone
    by_renewals = each.groupby("renewals")["payments_to_come"].mean()
    assert by_renewals.is_monotonic_increasing
    assert result["mrr_now"] == 20 * plan["active"]
    # each subscriber's value: half of 20 for each payment to come, the next in full
    assert value["mean"] == pytest.approx(0.5 * 20 * value["mean_residual_periods"])
    assert 20 * 0.5 < value["new_subscriber"] < value["mean"]


def test_subscribers_alike_are_said_so(tmp_path: Path) -> None:
    """Everyone cancels after each month with the same chance (12%): the Beta of the
    chances is a point (alpha and beta run off together), which the report says in words
    rather than in parameters of millions."""
    rng = np.random.default_rng(4)
    as_of = dt.date(2026, 6, 30)
    lines = ["subscription_id,customer_id,plan,price,started_at,cancelled_at"]
    for n in range(3000):
        start = dt.date(2024, 5, 1) + dt.timedelta(days=int(rng.integers(0, 790)))
        end = _add_months(start, int(rng.geometric(0.12)))
        lines.append(f"s{n},c{n},box,15,{start},{end if end <= as_of else ''}")
    (tmp_path / "subs.csv").write_text("\n".join(lines) + "\n")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        ingest(store, tmp_path / "subs.csv", as_of=as_of.isoformat())
        (plan,) = report(store)["plans"]
    assert plan["fit"]["alike"] and plan["fit"]["model"] == "sbg"
    assert plan["fit"]["mean_churn"] == pytest.approx(0.12, abs=0.015)
    text = CliRunner().invoke(app, ["subscriptions", "report", "--db", str(db)])
    assert (
        "every subscriber alike, 1" in text.output
        and "% cancelling after each period" in text.output
    )


def test_a_chance_to_cancel_that_grows_with_tenure_keeps_the_bdw(tmp_path: Path) -> None:
    """Subscribers whose own chance to cancel grows with tenure (BdW, c = 1.8): the
    likelihood ratio keeps the BdW, which recovers c, tracks the holdout better than the
    sBG would, and values each subscriber by its own retention curve."""
    rng = np.random.default_rng(2)
    as_of = dt.date(2026, 6, 30)
    lines = ["subscription_id,customer_id,plan,price,started_at,cancelled_at"]
    for n in range(6000):
        start = dt.date(2024, 5, 1) + dt.timedelta(days=int(rng.integers(0, 790)))
        theta = rng.beta(0.6, 3.0)
        # still active after t periods while (1 - theta) ** (t ** c) > u
        survived = (np.log(rng.random()) / np.log1p(-theta)) ** (1 / 1.8)
        paid = min(int(np.floor(survived)) + 1, 600)
        end = _add_months(start, paid)
        lines.append(f"s{n},c{n},basic,20,{start},{end if end <= as_of else ''}")
    (tmp_path / "subs.csv").write_text("\n".join(lines) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "subs.csv", as_of=as_of.isoformat())
        result = report(store, margin=1.0)
    (plan,) = result["plans"]
    fit = plan["fit"]
    assert fit["model"] == "bdw", fit["choice"]
    assert "is significant" in fit["choice"] and "rises with tenure" in fit["choice"]
    assert fit["c"] == pytest.approx(1.8, rel=0.15)
    sbg, bdw = fit["candidates"]["sbg"], fit["candidates"]["bdw"]
    assert 2 * (bdw["log_likelihood"] - sbg["log_likelihood"]) > 3.841
    assert fit["log_likelihood"] == bdw["log_likelihood"]
    from retain.models import BetaDiscreteWeibull, ShiftedBetaGeometric
    from retain.subscriptions import _tracking, survival

    with Store(tmp_path / "s.duckdb") as store:
        table = survival(store, as_of)
    by_sbg = _tracking(table, ShiftedBetaGeometric)
    assert by_sbg is not None
    error = plan["tracking"]["holdout_mean_abs_error"]
    assert error < 0.1 and error < by_sbg["holdout_mean_abs_error"], (error, by_sbg)

    model = BetaDiscreteWeibull()
    model.params_ = {k: fit[k] for k in ("alpha", "beta", "c")}
    assert fit["survival"]["12"] == pytest.approx(model.survival([12]).iloc[0])
    # a new subscriber: the first payment and the discounted renewals of the BdW
    per_period = fit["discount_rate_per_period"]
    renewals = model.expected_residual_lifetime([0], per_period).iloc[0]
    assert plan["value"]["new_subscriber"] == pytest.approx(20 * (1 + renewals))


def test_stripes_export_is_read_by_its_columns(tmp_path: Path) -> None:
    export = tmp_path / "subscriptions.csv"
    export.write_text(
        "id,Customer ID,Customer Email,Plan,Product,Quantity,Currency,Interval,Amount,Status,"
        "Created (UTC),Start (UTC),Current Period Start (UTC),Current Period End (UTC),"
        "Trial Start (UTC),Trial End (UTC),Canceled At (UTC),Cancel At Period End,"
        "Ended At (UTC)\n"
        "sub_1,cus_1,a@example.com,price_basic,Basic,1,usd,month,20.00,active,"
        "2024-01-10 09:00,2024-01-10 09:00,2024-06-10 09:00,2024-07-10 09:00,,,,false,\n"
        "sub_2,cus_2,b@example.com,price_basic,Basic,1,usd,month,20.00,canceled,"
        "2024-01-12 10:00,2024-01-12 10:00,2024-03-12 10:00,2024-04-12 10:00,,,"
        "2024-03-20 10:00,false,2024-03-20 10:00\n"
        "sub_3,cus_3,c@example.com,price_basic,Basic,2,usd,month,20.00,active,"
        "2024-02-01 08:00,2024-02-01 08:00,2024-06-01 08:00,2024-07-01 08:00,,,"
        "2024-06-15 08:00,true,\n"
        "sub_4,cus_4,d@example.com,price_year,Pro,1,usd,year,480.00,trialing,"
        "2024-06-01 08:00,2024-06-01 08:00,2024-06-01 08:00,2024-06-15 08:00,"
        "2024-06-01 08:00,2024-06-15 08:00,,false,\n"
        "sub_5,cus_5,e@example.com,price_basic,Basic,1,usd,month,20.00,incomplete_expired,"
        "2024-05-01 08:00,2024-05-01 08:00,,,,,,false,\n"
        "sub_6,cus_6,f@example.com,price_basic,Basic,1,usd,fortnight,20.00,active,"
        "2024-05-01 08:00,2024-05-01 08:00,,,,,,false,\n"
    )
    with Store(tmp_path / "s.duckdb") as store:
        store.con.execute(
            "INSERT INTO settings VALUES ('currency', 'USD', 'by hand', now()::TIMESTAMP)"
        )
        done = ingest(store, export, as_of="2024-06-30")
        rows = dict(
            store.con.execute("SELECT subscription_id, cancelled_at FROM subscriptions").fetchall()
        )
        quarantined = store.con.execute(
            "SELECT row_number, column_name, reason FROM quarantine ORDER BY row_number"
        ).fetchall()
        table = mrr_movements(store)
    assert done.format == "stripe" and done.subscriptions == 4
    assert rows["sub_1"] is None
    assert rows["sub_2"] == dt.datetime(2024, 3, 20, 10)
    assert rows["sub_3"] == dt.datetime(2024, 7, 1, 8)  # cancelled at the period's end
    assert rows["sub_4"] is None
    assert quarantined[0][:2] == (6, "Status") and "never went through" in quarantined[0][2]
    assert quarantined[1][:2] == (7, "Interval") and "got 'fortnight'" in quarantined[1][2]
    # June's end: sub_1 20, sub_3 two seats 40, sub_4 paying from its trial's end 480/12
    assert table["mrr"].iloc[-1] == pytest.approx(20 + 40 + 40)


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("x1,a,basic,-5,month,2024-01-01,,active", "price", "negative amount: got -5"),
        ("x1,a,basic,abc,month,2024-01-01,,active", "price", "unreadable amount"),
        ("x1,a,basic,5,month,2024-03-01,2024-02-01,canceled", "cancelled_at", "ends before"),
        ("x1,a,basic,5,month,2024-03-01,,canceled", "cancelled_at", "no day it ended"),
        ("x1,a,basic,5,month,2031-03-01,,active", "started_at", "after the observation"),
        ("x1,,basic,5,month,2024-03-01,,active", "customer_id", "no customer identity"),
        (",a,basic,5,month,2024-03-01,,active", "subscription_id", "subscription_id"),
        ("x1,a,basic,5,month,someday,,active", "started_at", "unreadable date"),
    ],
)
def test_a_bad_row_is_set_aside_with_its_reason(
    tmp_path: Path, row: str, column: str, words: str
) -> None:
    path = tmp_path / "subs.csv"
    path.write_text(
        "subscription_id,customer_id,plan,price,billing_interval,started_at,cancelled_at,status\n"
        f"ok,b,basic,5,month,2024-01-01,,active\n{row}\n"
    )
    with Store(tmp_path / "s.duckdb") as store:
        done = ingest(store, path, as_of="2024-06-30")
        stored = store.con.execute("SELECT subscription_id FROM subscriptions").fetchall()
        where = store.con.execute(
            "SELECT row_number, column_name, reason FROM quarantine"
        ).fetchall()
    assert done.subscriptions == 1 and stored == [("ok",)]
    assert where[0][0] == 3 and where[0][1] == column and words in where[0][2], where


def test_the_same_file_twice_changes_nothing_and_a_changed_row_replaces(
    hand: Path, tmp_path: Path
) -> None:
    path = tmp_path / "subs.csv"
    path.write_text(HAND)
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, path, as_of="2024-06-30")
        again = ingest(store, path, as_of="2024-06-30")
        assert again.same_as is not None
        path.write_text(
            HAND.replace("c2,c,basic,30,,month,2024-04-02,,", "c2,c,basic,35,,month,2024-04-02,,")
        )
        ingest(store, path, as_of="2024-06-30")
        rows = store.con.execute("SELECT count(*), sum(price) FROM subscriptions").fetchall()
    assert rows == [(7, 20 + 50 + 240 + 30 + 35 + 10 + 10)]


def test_cli_and_api_give_one_answer(hand: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["subscriptions", "report", "--db", str(hand), "--json"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.output)
    assert answer["mrr_now"] == 60 and answer["paying_customers"] == 3
    plans = {p["plan"]: p for p in answer["plans"]}
    assert plans["yearly"]["fit"] is None and "no billing period" in plans["yearly"]["problem"]
    assert plans["seats"]["fit"] is None and "too few" in plans["seats"]["problem"]
    text = runner.invoke(app, ["subscriptions", "report", "--db", str(hand)])
    assert text.exit_code == 0 and "MRR 60.00 from 3 paying customers" in text.output
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    with TestClient(create_app(hand, None, warm=False), client=("127.0.0.1", 5000)) as client:
        served = client.get("/api/subscriptions")
        earlier = client.get("/api/subscriptions?as_of=2024-03-31")
        bad = client.get("/api/subscriptions?as_of=2024-13-01")
    assert served.status_code == 200
    assert served.json() == answer
    assert earlier.json()["as_of"] == "2024-03-31" and earlier.json()["mrr_now"] == 70
    assert bad.status_code == 422


def test_a_store_without_subscriptions_says_how_to_add_them(tmp_path: Path) -> None:
    with (
        Store(tmp_path / "s.duckdb") as store,
        pytest.raises(StoreError, match="--format subscriptions"),
    ):
        mrr_movements(store)


def _store_of(tmp_path: Path, text: str, as_of: str = "2024-06-30") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "subs.csv").write_text(text)
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "subs.csv", as_of=as_of)
    return tmp_path / "s.duckdb"


HEAD = "subscription_id,customer_id,plan,price,quantity,started_at,trial_ends_at,cancelled_at\n"


def _churning(n: int, start: str = "2024-01-01", price: int = 10, seed: int = 3) -> str:
    """``n`` monthly subscriptions from ``start`` (the 1st of a month), each leaving after
    each payment with its own chance, drawn from Beta(1, 2)."""
    rng = np.random.default_rng(seed)
    first = dt.date.fromisoformat(start)
    rows = []
    for i in range(n):
        end = _add_months(first, int(rng.geometric(rng.beta(1.0, 2.0)))).isoformat()
        end = end if end <= "2024-06-30" else ""
        rows.append(f"p{i}-{start},p{i}-{start},basic,{price},,{start},,{end}")
    return "\n".join(rows) + "\n"


def test_nobody_paying_at_a_months_end_is_mrr_zero(tmp_path: Path) -> None:
    db = _store_of(tmp_path, HEAD + "t1,c1,basic,10,,2024-06-20,2024-07-04,\n")
    with Store(db, read_only=True) as store:
        answer = report(store)
    assert answer["mrr_now"] == 0 and answer["cohorts"] == []
    assert answer["plans"] == []  # its trial runs past the observation day: nothing paid


def test_an_unreadable_observation_date_is_named(hand: Path) -> None:
    done = CliRunner().invoke(
        app, ["subscriptions", "report", "--db", str(hand), "--as-of", "2024-13-01"]
    )
    assert done.exit_code != 0 and "unreadable observation date: got '2024-13-01'" in done.output


def test_a_known_end_is_valued_as_known(tmp_path: Path) -> None:
    """A subscriber cancelled at the end of their period pays nothing more; a change of
    seats is the same subscriber going on, not a cancellation."""
    text = HEAD + _churning(60)
    known = "k1,k,basic,10,,2024-01-01,,2024-07-01\n"  # cancelled at the period's end
    seats = "g1,g,basic,10,2,2024-01-01,,2024-03-01\ng2,g,basic,10,3,2024-03-01,,\n"
    db = _store_of(tmp_path / "with", text + known + seats)
    plain = _store_of(tmp_path / "without", text)
    with Store(db, read_only=True) as store:
        answer = report(store, margin=1.0, discount_rate=0.1)
        table = survival(store)
    with Store(plain, read_only=True) as store:
        others = report(store, margin=1.0, discount_rate=0.1)
        alone = survival(store)
    (plan,), (other,) = answer["plans"], others["plans"]
    assert plan["active"] == other["active"] + 2 and plan["value"]["ending"] == 1
    # g's change of seats is one spell, active from January on; k is active to July
    assert (table["active"] - alone["active"]).tolist() == [2] * len(alone)
    assert set(table["cohort"]) == {"2024-01"}
    # k pays nothing more: with k open-ended instead, the same fit (k is active through
    # every period observed either way) adds one January subscriber's value at 10
    opened = _store_of(tmp_path / "open", text + known.replace("2024-07-01", "") + seats)
    with Store(opened, read_only=True) as store:
        (open_plan,) = report(store, margin=1.0, discount_rate=0.1)["plans"]
    assert open_plan["fit"] == plan["fit"]
    from retain.models import ShiftedBetaGeometric

    model = ShiftedBetaGeometric().fit(table["active"].tolist())
    derl = model.expected_residual_lifetime([5], plan["fit"]["discount_rate_per_period"])
    added = open_plan["value"]["total"] - plan["value"]["total"]
    assert added == pytest.approx(10 * derl.iloc[0], rel=1e-6)
    assert plan["value"]["plan_charge"] == 10


def test_a_new_subscriber_is_worth_the_plans_usual_charge(tmp_path: Path) -> None:
    text = HEAD + _churning(4, "2024-01-01", 10) + _churning(40, "2024-02-01", 30)
    db = _store_of(tmp_path, text)
    with Store(db, read_only=True) as store:
        (plan,) = report(store, margin=1.0)["plans"]
    assert plan["value"]["plan_charge"] == 30
    assert plan["value"]["new_subscriber"] > 30  # the first payment and the renewals


def test_a_free_start_is_no_cohort(tmp_path: Path) -> None:
    text = HEAD + "f1,f,free,0,,2024-01-01,,2024-03-01\nf2,f,paid,20,,2024-03-01,,\n"
    db = _store_of(tmp_path, text)
    with Store(db, read_only=True) as store:
        table = cohort_retention(store)
        movements = mrr_movements(store)
    assert table["cohort"].unique().tolist() == ["2024-03"]
    assert table["logo_retention"].tolist() == [1.0] * 4
    assert movements["customers"].tolist() == [0, 0, 1, 1, 1, 1]


def test_a_subscriptions_file_without_a_start_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "subs.csv").write_text(
        "subscription_id,customer_id,price,start_date\ns1,c,10,2024-01-01\n"
    )
    with Store(tmp_path / "s.duckdb") as store, pytest.raises(Exception, match="started_at"):
        ingest(store, tmp_path / "subs.csv")


def test_a_charge_beyond_the_amount_limit_is_set_aside(tmp_path: Path) -> None:
    db = _store_of(
        tmp_path,
        HEAD + "big,c,basic,999999999,999999999,2024-01-01,,\nok,d,basic,10,,2024-01-01,,\n",
    )
    with Store(db, read_only=True) as store:
        stored = store.con.execute("SELECT subscription_id FROM subscriptions").fetchall()
        reason = store.con.execute("SELECT reason FROM quarantine").fetchall()
    assert stored == [("ok",)] and "implausible charge" in reason[0][0]


def test_a_spell_goes_on_while_an_earlier_subscription_is_open(tmp_path: Path) -> None:
    """a runs all year; b, an add-on, ends in March; c starts as a ends: one spell from
    January on, not an end in December and a new start."""
    text = (
        HEAD
        + "a,x,basic,10,,2023-01-01,,2023-12-31\n"
        + "b,x,basic,10,,2023-03-01,,2023-03-10\n"
        + "c,x,basic,10,,2023-12-31,,\n"
    )
    db = _store_of(tmp_path, text, as_of="2024-06-30")
    with Store(db, read_only=True) as store:
        table = survival(store)
    assert set(table["cohort"]) == {"2023-01"}
    assert table["active"].tolist() == [1] * 18


def test_an_orders_file_with_a_subscription_column_is_orders(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "subscription_id,order_id,customer_id,ordered_at,net_revenue\ns1,o1,c1,2024-01-01,10\n"
    )
    with Store(tmp_path / "s.duckdb") as store:
        done = ingest(store, path, as_of="2024-06-30")
    assert done.format == "orders" and done.orders == 1


def test_several_cohorts_as_the_rows_of_an_array() -> None:
    from retain.models import ShiftedBetaGeometric

    rows = np.array([[1000, 631, 468, 382], [1000, 640, 470, 380]])
    as_array = ShiftedBetaGeometric().fit(rows).params_
    as_lists = ShiftedBetaGeometric().fit([list(r) for r in rows]).params_
    assert as_array == pytest.approx(as_lists, rel=1e-9)


def test_status_counts_the_subscriptions(hand: Path) -> None:
    from retain.store import status

    with Store(hand, read_only=True) as store:
        assert status(store)["subscriptions"] == 7
    shown = CliRunner().invoke(app, ["status", "--db", str(hand)])
    assert shown.exit_code == 0 and "subscriptions: 7" in shown.output


def test_a_store_of_subscriptions_alone_opens_on_its_subscriptions(tmp_path: Path) -> None:
    """No orders: the overview would have nothing to show, so / leads to /subscriptions; a
    store with neither still says how to add data."""
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    (tmp_path / "subs.csv").write_text(HAND)
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "subs.csv", as_of="2024-06-30")
    Store(tmp_path / "empty.duckdb").close()
    app_ = create_app(tmp_path / "s.duckdb", None, warm=False)
    with TestClient(app_, client=("127.0.0.1", 5000)) as client:
        first = client.get("/", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/subscriptions"
        assert client.get("/").status_code == 200
    empty = create_app(tmp_path / "empty.duckdb", None, warm=False)
    with TestClient(empty, client=("127.0.0.1", 5000)) as client:
        nothing = client.get("/", follow_redirects=False)
    assert nothing.status_code == 503 and "holds no orders yet" in nothing.text


def test_the_likelihood_ratio_on_the_published_cohorts() -> None:
    """The BdW is kept for "high end" (likelihood ratio 11.7) and the sBG for "regular"
    (1.3): the published cohorts' duration dependence is clear in one only."""
    from retain.subscriptions import _fit_both
    from test_models_bgbb_sbg import HIGH_END, REGULAR

    regular, high_end = _fit_both([REGULAR]), _fit_both([HIGH_END])
    assert regular is not None and high_end is not None
    assert regular[0].name == "sbg" and "not significant" in regular[2]
    assert high_end[0].name == "bdw" and "rises with tenure" in high_end[2]


def test_the_cli_and_api_list_the_subscribers(hand: Path) -> None:
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    runner = CliRunner()
    shown = runner.invoke(app, ["subscriptions", "subscribers", "--db", str(hand), "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    with Store(hand, read_only=True) as store:
        assert rows == json.loads(subscribers(store, limit=20).to_json(orient="records"))
    with TestClient(create_app(hand, None, warm=False), client=("127.0.0.1", 5000)) as client:
        served = client.get("/api/subscriptions/subscribers?limit=20")
    assert served.status_code == 200 and served.json() == rows
    bad = runner.invoke(app, ["subscriptions", "subscribers", "--db", str(hand), "--top", "0"])
    assert bad.exit_code != 0
