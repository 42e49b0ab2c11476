"""The store's settings (retain.config): each checked once, kept in the store, the default
of every command and of the service; an explicit option still wins."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain import config  # noqa: E402
from retain.cli import app  # noqa: E402
from retain.errors import ArgumentError, DataError  # noqa: E402
from retain.features import summarize  # noqa: E402
from retain.ingest import ingest, observation_date  # noqa: E402
from retain.metrics import formula_clv, metrics_report  # noqa: E402
from retain.service import create_app  # noqa: E402
from retain.service.orders import ingest_order  # noqa: E402
from retain.store import MIGRATIONS, Store  # noqa: E402

runner = CliRunner()

ORDERS = (
    "order_id,customer_id,ordered_at,net_revenue\n"
    "1,a,2024-01-05,10\n2,b,2024-01-20,20\n3,a,2024-02-10,30\n4,c,2024-03-02,40\n"
    "5,b,2024-04-11,50\n6,a,2024-05-01,60\n"
)


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def orders_file(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("currency", "dollars", ["currency", "'dollars'", "ISO 4217"]),
        ("margin", "30", ["margin", "30", "0.3"]),
        ("margin", "abc", ["margin", "'abc'", "(0, 1]"]),
        ("discount_rate", "10", ["discount_rate", "10", "per year", "[0, 1)"]),
        ("discount_rate", "-0.1", ["discount_rate", "-0.1", "per year"]),
        ("as_of", "yesterday", ["as_of", "'yesterday'", "YYYY-MM-DD", "live"]),
        ("window_days", "7", ["window_days", "7", "30 to 36,500", "auto"]),
        ("window_days", "1.5", ["window_days", "'1.5'", "whole number"]),
        ("time_zone", "Mars/Olympus", ["time_zone", "'Mars/Olympus'", "IANA"]),
        ("colour", "blue", ["no setting 'colour'", "currency, margin"]),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting_value_and_what_it_takes(
    store: Store, name: str, value: str, words: list[str]
) -> None:
    with pytest.raises(ArgumentError) as caught:
        config.set_setting(store, name, value)
    for word in words:
        assert word in str(caught.value)
    assert config.load_settings(store) == config.Settings()


def test_values_are_checked_into_their_types_and_default_removes_them(store: Store) -> None:
    assert config.set_setting(store, "currency", " eur ") == "EUR"
    assert config.set_setting(store, "margin", "0.3") == 0.3
    assert config.set_setting(store, "discount_rate", 0.05) == 0.05
    assert config.set_setting(store, "as_of", "1998-06-30") == dt.date(1998, 6, 30)
    assert config.set_setting(store, "window_days", "120") == 120
    assert config.set_setting(store, "time_zone", "Europe/Paris") == "Europe/Paris"
    settings = config.load_settings(store)
    assert (settings.currency, settings.margin, settings.discount_rate) == ("EUR", 0.3, 0.05)
    assert (settings.as_of, settings.window_days) == (dt.date(1998, 6, 30), 120)
    assert settings.source("margin") == "set"
    config.set_setting(store, "window_days", "auto")
    config.set_setting(store, "margin", "default")
    settings = config.load_settings(store)
    assert settings.window_days is None and settings.margin is None
    assert settings.source("margin") == "default"


def test_a_bad_value_in_the_table_is_a_data_error_saying_how_to_fix_it(store: Store) -> None:
    store.con.execute("INSERT INTO settings VALUES ('margin', '7', 'set', now()::TIMESTAMP)")
    with pytest.raises(DataError, match="retain settings set margin VALUE"):
        config.load_settings(store)


def test_retain_settings_shows_and_sets_them(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    assert run("ingest", orders_file(tmp_path), "--db", db).exit_code == 0
    shown = run("settings", "--db", db, "--json")
    assert shown.exit_code == 0, shown.output
    rows = {r["name"]: r for r in json.loads(shown.stdout)}
    assert list(rows) == list(config.SETTINGS)
    assert set(rows) == {
        "currency",
        "margin",
        "discount_rate",
        "as_of",
        "window_days",
        "time_zone",
        "max_amount",
        "smtp_url",
        "global_control",
        "erase_orders",
    }
    assert rows["as_of"]["source"] == "default"
    assert rows["as_of"]["shown"] == "the day of the last order"
    assert rows["discount_rate"]["value"] == 0.1
    changed = run("settings", "set", "margin", "0.3", "--db", db)
    assert changed.exit_code == 0 and changed.stdout.strip() == "margin = 0.3"
    text = run("settings", "--db", db).stdout
    assert "margin: 0.3  (set)" in text


@pytest.mark.parametrize(
    "args",
    [
        ["set", "margin", "30"],
        ["set", "window_days", "auto-ish"],
        ["set", "nothing", "1"],
        ["set", "margin"],
        ["unset", "margin"],
    ],
)
def test_retain_settings_refuses_in_one_line(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "s.duckdb"
    result = run("settings", *args, "--db", db)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output


def test_an_ingest_as_of_sets_the_observation_date_unless_set_by_hand(
    store: Store, tmp_path: Path
) -> None:
    path = orders_file(tmp_path)
    ingest(store, path, as_of="2024-06-30")
    settings = config.load_settings(store)
    assert settings.as_of == dt.date(2024, 6, 30) and settings.source("as_of") == "ingest"
    assert config.observation_day(store) == dt.date(2024, 6, 30)
    # without --as-of the store is live again for single orders
    ingest(store, path)
    assert config.load_settings(store).as_of is None
    assert config.observation_day(store) == dt.date(2024, 5, 1)  # the last order's day
    config.set_setting(store, "as_of", "2024-05-31")
    ingest(store, path, as_of="2024-07-31")
    ingest(store, path)
    settings = config.load_settings(store)
    assert settings.as_of == dt.date(2024, 5, 31) and settings.source("as_of") == "set"
    assert observation_date(store) == dt.datetime(2024, 5, 31, 23, 59, 59, 999999)


def test_an_as_of_set_by_hand_binds_file_ingests_and_api_orders(
    store: Store, tmp_path: Path
) -> None:
    ingest(store, orders_file(tmp_path))
    config.set_setting(store, "as_of", "2024-05-31")
    late = {"order_id": "X1", "customer_id": "a", "ordered_at": "2026-11-30", "net_revenue": 5}
    report = ingest_order(store, late)
    assert report.orders == 0
    assert "dated after the observation date 2024-05-31" in report.examples[0]
    path = tmp_path / "more.csv"
    path.write_text("order_id,customer_id,ordered_at,net_revenue\n9,a,2024-06-15,5\n")
    assert ingest(store, path).quarantined == 1


def test_live_follows_the_clock_in_the_stores_time_zone(store: Store, tmp_path: Path) -> None:
    ingest(store, orders_file(tmp_path))
    config.set_setting(store, "time_zone", "Pacific/Kiritimati")
    config.set_setting(store, "as_of", "live")
    today = dt.datetime.now(zoneinfo.ZoneInfo("Pacific/Kiritimati")).date()
    assert config.observation_day(store) == today
    assert metrics_report(store)["overview"]["as_of"] == today.isoformat()
    # an explicit as_of still wins, and is checked
    assert config.observation_day(store, "2024-03-01") == dt.date(2024, 3, 1)
    with pytest.raises(DataError, match="before the first order"):
        config.observation_day(store, "2023-12-31")


def test_every_observation_date_follows_the_setting(store: Store, tmp_path: Path) -> None:
    ingest(store, orders_file(tmp_path))
    config.set_setting(store, "as_of", "2024-03-31")
    assert metrics_report(store)["overview"]["as_of"] == "2024-03-31"
    assert metrics_report(store)["overview"]["orders"] == 4
    assert summarize(store).attrs["observation_end"] == "2024-03-31"
    from retain.segments import customer_segments

    assert customer_segments(store).attrs["as_of"] == "2024-03-31"


def test_metrics_default_to_the_settings_and_options_win(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    assert run("ingest", orders_file(tmp_path), "--db", db).exit_code == 0
    for name, value in (("margin", "0.5"), ("window_days", "60"), ("discount_rate", "0.2")):
        assert run("settings", "set", name, value, "--db", db).exit_code == 0
    doc = json.loads(run("metrics", "--db", db, "--json").stdout)
    assert doc["overview"]["margin"] == 0.5 and doc["overview"]["window_days"] == 60
    assert "window_days setting" in doc["overview"]["window_rule"]
    assert doc["formula_clv"]["discount_rate"] == 0.2
    doc = json.loads(
        run("metrics", "--db", db, "--json", "--margin", "1", "--window-days", "90").stdout
    )
    assert doc["overview"]["margin"] == 1 and doc["overview"]["window_days"] == 90
    alerts = json.loads(run("alerts", "--db", db, "--json").stdout)
    assert alerts["window_days"] == 60


def test_the_discount_rate_of_retain_metrics_is_per_year(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    assert run("ingest", orders_file(tmp_path), "--db", db).exit_code == 0
    help_text = run("metrics", "--help").stdout
    assert "per year" in " ".join(help_text.split())
    args = ("--window-days", "30", "--json", "--db", db)
    monthly = json.loads(run("metrics", "--discount-rate", "0.1", *args).stdout)["formula_clv"]
    assert monthly["discount_rate"] == 0.1
    assert monthly["discount_rate_per_period"] == pytest.approx(1.1 ** (1 / 12) - 1)
    assert monthly["clv"] == pytest.approx(
        formula_clv(
            monthly["aov"],
            monthly["purchase_frequency"],
            churn_rate=monthly["churn_rate"] / 100,
            discount_rate=1.1 ** (1 / 12) - 1,
        )
    )
    quarterly = json.loads(
        run("metrics", "--period", "quarter", "--discount-rate", "0.1", "--window-days", "90",
            "--json", "--db", db).stdout
    )["formula_clv"]  # fmt: skip
    assert quarterly["discount_rate_per_period"] == pytest.approx(1.1**0.25 - 1)


def test_the_rates_of_a_year_compound_to_the_yearly_rate() -> None:
    assert (1 + config.per_period_rate(0.1, 1)) ** 12 == pytest.approx(1.1)
    assert config.per_period_rate(0.1, 12) == pytest.approx(0.1)


def test_score_reads_the_settings(tmp_path: Path, cdnow_sample_db: Path) -> None:
    from retain.scoring import fit_store, load_score_basis, score_store

    path = tmp_path / "scored.duckdb"
    shutil.copy(cdnow_sample_db, path)
    with Store(path) as store:
        config.set_setting(store, "margin", 0.4)
        config.set_setting(store, "discount_rate", 0.05)
        fit_store(store, model="mbgnbd", unit="W")
        score_store(store)
        basis = load_score_basis(store)
        assert (basis.margin, basis.discount_rate) == (0.4, 0.05)
        score_store(store, margin=0.2, discount_rate=0.0)
        basis = load_score_basis(store)
        assert (basis.margin, basis.discount_rate) == (0.2, 0.0)
        with pytest.warns(DeprecationWarning, match="as_of"):
            report = score_store(store, observation_end="1998-05-31")
        assert report.as_of == "1998-05-31"
        assert score_store(store, as_of="1998-04-30").as_of == "1998-04-30"


@pytest.fixture(scope="module")
def scored_03(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample as `make demo` scores it: with a margin of 0.3."""
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    shutil.copy(cdnow_sample_db, path)
    assert run("fit", "--db", path, "--unit", "W", "--model", "mbgnbd").exit_code == 0
    assert run("score", "--db", path, "--margin", "0.3").exit_code == 0
    return path


@pytest.fixture(scope="module")
def client(scored_03: Path) -> Iterator[TestClient]:
    with TestClient(create_app(scored_03, writes=False, warm=False)) as c:
        yield c


def test_the_demos_cli_and_dashboard_show_the_same_historical_clv(
    scored_03: Path, client: TestClient
) -> None:
    with Store(scored_03, read_only=True) as store:
        per_customer = store.scalar(
            "SELECT avg(r) FROM (SELECT sum(net_revenue) AS r FROM orders GROUP BY customer_id)"
        )
    cli = json.loads(run("metrics", "--db", scored_03, "--top", "5", "--json").stdout)
    api = client.get("/api/metrics").json()
    assert cli["overview"]["margin"] == api["overview"]["margin"] == 0.3
    assert cli["overview"]["average_historical_clv"] == pytest.approx(0.3 * per_customer)
    assert api["overview"]["average_historical_clv"] == pytest.approx(
        cli["overview"]["average_historical_clv"]
    )


def test_the_overview_page_shows_the_settings(scored_03: Path, client: TestClient) -> None:
    api = client.get("/api/metrics").json()
    rows = {r["name"]: r for r in api["settings"]}
    assert rows["as_of"]["value"] == "1998-06-30" and rows["as_of"]["source"] == "ingest"
    html = client.get("/").text
    assert 'id="overview-settings"' in html
    assert 'id="setting-discount_rate"' in html and "discount rate of CLV, per year" in html
    assert "1998-06-30</td><td>the latest ingest" in html


def test_a_store_from_before_the_settings_takes_its_latest_ingests_as_of(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.duckdb"
    with Store(path) as store:
        ingest(store, orders_file(tmp_path), as_of="2024-06-30")
        store.con.execute("DROP TABLE settings")
        settings_version = 1 + [d for d, _ in MIGRATIONS].index("settings")
        store.con.execute("DELETE FROM schema_version WHERE version >= ?", [settings_version])
    with Store(path) as store:
        assert config.load_settings(store).as_of == dt.date(2024, 6, 30)
        assert config.load_settings(store).source("as_of") == "ingest"


def test_a_window_setting_too_short_for_the_period_names_the_setting(
    store: Store, tmp_path: Path
) -> None:
    ingest(store, orders_file(tmp_path))
    config.set_setting(store, "window_days", 60)
    assert metrics_report(store)["overview"]["window_days"] == 60
    with pytest.raises(DataError, match="window_days setting does not fit quarters"):
        metrics_report(store, "quarter")
    assert metrics_report(store, "quarter", window_days=120)["overview"]["window_days"] == 120


def test_the_erase_orders_setting_takes_unlink_or_remove(store: Store) -> None:
    assert config.load_settings(store).erase_orders == "unlink"
    assert config.set_setting(store, "erase_orders", " Remove ") == "remove"
    assert config.load_settings(store).erase_orders == "remove"
    with pytest.raises(ArgumentError, match=r"unlink .* or remove"):
        config.set_setting(store, "erase_orders", "anonymise")
