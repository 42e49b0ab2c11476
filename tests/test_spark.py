"""The Spark path (retain.spark, `retain spark score`) against the store's path, in Spark's
local mode: the same customers, the same summaries, the same scores.

One Spark session serves every test (it takes several seconds to start). The stores
are built with the store's own commands; their orders are written to Parquet by DuckDB
and read back by Spark.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.datasets import cdnow_path
from retain.features import summarize
from retain.ingest import ingest
from retain.scoring import fit_store, score_store
from retain.segments.rfm import rfm_scores
from retain.store import Store

if shutil.which("java") is None:  # pragma: no cover - make test installs Java
    if os.environ.get("RETAIN_REQUIRE_SPARK") == "1":
        raise RuntimeError("Java is missing: `make java` installs it (openjdk-17-jre-headless)")
    pytest.skip("Spark needs Java 17 or later", allow_module_level=True)

rs = pytest.importorskip("retain.spark")

runner = CliRunner()


@pytest.fixture(scope="module")
def spark():
    session = rs.session("local[2]")
    yield session
    session.stop()


def _messy_orders(seed: int = 7, customers: int = 300) -> pd.DataFrame:
    """A store's worth of awkward orders: one-time buyers, several orders on one day,
    refunds (negative net revenue), orders late in the day and after the observation day,
    a customer whose only order is a refund."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01")
    for c in range(customers):
        first = start + pd.Timedelta(days=int(rng.integers(0, 500)))
        n = 1 if rng.random() < 0.45 else int(rng.integers(2, 12))
        times = [first]
        for _ in range(n - 1):
            gap = 0 if rng.random() < 0.1 else int(rng.exponential(40))
            times.append(times[-1] + pd.Timedelta(days=gap, minutes=int(rng.integers(0, 1439))))
        for k, at in enumerate(times):
            amount = round(float(rng.gamma(2.0, 30.0)), 2)
            if k and rng.random() < 0.07:
                amount = -round(amount / 3, 2)  # a refund
            rows.append((f"o{c}-{k}", f"cust{c:04d}", at.isoformat(), amount))
    rows.append(("r1", "refunder", "2024-06-01T10:00:00", -25.0))
    rows.append(("late", "cust0001", "2025-12-31T23:59:00", 80.0))  # after the as_of
    return pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "net_revenue"])


def _store(tmp: Path, *, as_of: str, csv: Path | None = None, **fit: object) -> tuple[Path, Path]:
    """A fitted, scored store from ``csv`` (default: the messy orders) and its orders as
    Parquet (customer_id, ordered_at, net_revenue: microsecond timestamps)."""
    path = tmp / "store.duckdb"
    with Store(path) as store:
        if csv is None:
            csv = tmp / "orders.csv"
            _messy_orders().to_csv(csv, index=False)
            ingest(store, csv, as_of=as_of)
        else:
            ingest(store, csv, format="cdnow", as_of=as_of)
        fit_store(store, **fit)  # type: ignore[arg-type]
        score_store(store)
        orders = tmp / "orders.parquet"
        store.con.execute(
            f"COPY (SELECT customer_id, ordered_at, net_revenue FROM orders) TO '{orders}' "
            "(FORMAT parquet)"
        )
    return path, orders


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _store(tmp_path_factory.mktemp("messy"), as_of="2025-09-30", unit="W")


def _scores(path: Path) -> pd.DataFrame:
    with Store(path, read_only=True) as store:
        return store.query("SELECT * FROM customer_scores ORDER BY customer_id")


def _assert_same_scores(
    expected: pd.DataFrame, found: pd.DataFrame, rtol: float = 1e-9, loose: tuple = ()
) -> None:
    """Every column equal: numbers to ``rtol`` relative (``loose`` columns to 1e-6), text,
    dates and missing values exactly."""
    found = found.sort_values("customer_id").reset_index(drop=True)
    expected = expected.reset_index(drop=True)
    assert list(found.columns) == list(expected.columns)
    assert found["customer_id"].tolist() == expected["customer_id"].tolist()
    for column in expected.columns:
        want, got = expected[column], found[column]
        if want.dtype.kind == "f" and column != "fit_id":
            assert (want.isna() == got.isna()).all(), column
            tol = 1e-6 if column in loose else rtol
            np.testing.assert_allclose(
                got.to_numpy(dtype=float), want.to_numpy(dtype=float), rtol=tol, atol=0,
                err_msg=column,
            )  # fmt: skip
        else:
            got_text = [_cell(column, v) for v in got]
            as_text = [_cell(column, v) for v in want]
            assert got_text == as_text, column


DATES = ("next_purchase_date", "next_purchase_window_start", "next_purchase_window_end", "as_of")


def _cell(column: str, value: object) -> str | None:
    """A cell as text to compare: a day for the date columns, None for a missing value."""
    if pd.isna(value):  # type: ignore[call-overload]
        return None
    return str(pd.Timestamp(value).date()) if column in DATES else str(value)  # type: ignore[arg-type]


def test_the_summaries_are_the_stores(spark, messy) -> None:
    from retain.spark import sql as q

    db, orders = messy
    end = dt.date(2025, 9, 30)
    frame = rs.read_orders(spark, str(orders))
    frame.selectExpr("customer_id", "ordered_at AS ts", "net_revenue AS amount") \
        .createOrReplaceTempView("t_orders")  # fmt: skip
    with Store(db, read_only=True) as store:
        for unit, grain in (("D", "D"), ("W", "W"), ("W", "D")):
            want = summarize(store, observation_end=end, unit=unit, grain=grain).sort_index()
            got = (
                spark.sql(q.SUMMARY.format(src="t_orders", **q.literals(end, unit, grain)))
                .toPandas()
                .set_index("customer_id")
                .sort_index()
            )
            assert got.index.tolist() == want.index.tolist()
            for column in ("frequency", "recency", "T"):
                assert got[column].tolist() == want[column].tolist(), (unit, grain, column)
            # sums of float amounts, added in another order
            np.testing.assert_allclose(got["monetary"], want["monetary"], rtol=1e-12, atol=1e-9)
        rfm = rfm_scores(store, as_of=end).sort_index()
    measured = (
        spark.sql(q.RFM_MEASURES.format(src="t_orders", **q.literals(end, "D", "D")))
        .toPandas()
        .set_index("customer_id")
        .sort_index()
    )
    assert measured.index.tolist() == rfm.index.tolist()
    for column in ("orders", "days_since_last_order"):
        assert measured[column].tolist() == rfm[column].tolist(), column
    assert measured["net_revenue"].tolist() == rfm["net_revenue"].tolist()
    np.testing.assert_array_equal(measured["typical_gap_days"], rfm["typical_gap_days"])


def test_scores_with_the_stores_fit_equal_the_stores(spark, messy) -> None:
    db, orders = messy
    with Store(db, read_only=True) as store:
        result = rs.score(rs.read_orders(spark, str(orders)), store=store, as_of="2025-09-30")
        found = result.scores.toPandas()
        with Store(db, read_only=True) as again:
            basis_bounds = again.query("SELECT * FROM score_basis")
    expected = _scores(db)
    assert result.fit["fit_id"] == int(expected["fit_id"].iloc[0])
    assert result.customers == len(expected)
    _assert_same_scores(expected, found)
    # the boundaries measured from Spark's counts are the full scoring's
    assert list(result.boundaries.monetary) == list(basis_bounds["monetary_bounds"].iloc[0])
    assert result.boundaries.population_gap_days == basis_bounds["population_gap_days"].iloc[0]
    assert found["segment"].nunique() > 3


def test_a_fit_on_spark_is_retain_fits(spark, tmp_path: Path) -> None:
    """CDNOW's sample fitted and scored both ways: the same model chosen for the same
    reason, the same guard, the same parameters and scores."""
    db, orders = _store(tmp_path, as_of="1998-06-30", csv=cdnow_path(sample=True))
    result = rs.score(rs.read_orders(spark, str(orders)))
    with Store(db, read_only=True) as store:
        row = store.query("SELECT * FROM model_fits ORDER BY fit_id DESC LIMIT 1").iloc[0]
    assert result.fit["model"] == row["model"]
    choice = json.loads(row["choice"])
    assert result.fit["choice"]["model"] == choice["model"]
    # the bootstrap sees the customers' groups in the store's order: the same interval
    assert result.fit["choice"]["difference_low"] == pytest.approx(choice["difference_low"], 1e-9)
    assert [t["kept"] for t in result.fit["guard"]] == [t["kept"] for t in json.loads(row["guard"])]
    params = json.loads(row["params"])["params"]
    for name, value in result.fit["params"].items():
        assert value == pytest.approx(params[name], rel=1e-9), name
    assert result.fit["data_range"] == json.loads(row["data_range"])
    expected = _scores(db).drop(columns="fit_id")
    found = result.scores.toPandas().drop(columns="fit_id")
    # the band of the mean CLV rests on the spend model's curvature, which the order of
    # adding up float amounts moves in the ninth digit
    _assert_same_scores(expected, found, loose=("clv_mean_low", "clv_mean_high"))


def test_the_command_writes_parquet_whole(spark, messy, tmp_path: Path) -> None:
    db, orders = messy
    out = tmp_path / "scores"
    args = ["spark", "score", "--orders", str(orders), "--out", str(out), "--db", str(db)]
    done = runner.invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    stored = _scores(db)
    assert report["customers"] == len(stored)
    # what `retain score` reports of the same rows
    totals = report["totals"]
    assert totals["clv_12m"] == pytest.approx(stored["clv_12m"].sum(), rel=1e-9)
    assert totals["mean_p_alive"] == pytest.approx(stored["p_alive"].mean(), rel=1e-9)
    assert totals["with_next_purchase_date"] == stored["next_purchase_date"].notna().sum()
    written = pq.read_table(out).to_pandas()
    assert {"customer_id", "p_alive", "clv_12m", "segment"} <= set(written.columns)
    assert written["customer_id"].is_unique and len(written) == report["customers"]
    assert json.loads((out / "_fit.json").read_text())["fit"]["fit_id"] == report["fit"]["fit_id"]
    assert not list(tmp_path.glob(".scores.*"))  # no staging folder left

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output and "--overwrite" in again.output


def test_bad_orders_are_refused_clearly(spark, messy, tmp_path: Path) -> None:
    _, orders = messy
    out = tmp_path / "scores"
    wrong = runner.invoke(
        app, ["spark", "score", "--orders", str(orders), "--out", str(out), "--amount", "total"]
    )
    assert wrong.exit_code == 2 and "'total'" in wrong.output and "--amount" in wrong.output
    assert not out.exists()

    nanos = tmp_path / "nanos.parquet"
    table = pa.table(
        {
            "customer_id": ["a", "a", "b"],
            "ordered_at": pa.array(pd.to_datetime(["2025-01-01", "2025-02-01", "2025-01-05"]))
            .cast(pa.timestamp("ns")),
            "net_revenue": [10.0, 12.0, 5.0],
        }
    )  # fmt: skip
    pq.write_table(table, nanos, version="2.6")
    refused = runner.invoke(app, ["spark", "score", "--orders", str(nanos), "--out", str(out)])
    assert refused.exit_code == 2 and "microseconds" in refused.output, refused.output

    text = tmp_path / "text.parquet"
    pq.write_table(
        pa.table({"customer_id": ["a"], "ordered_at": ["yesterday"], "net_revenue": [1.0]}), text
    )
    typed = runner.invoke(app, ["spark", "score", "--orders", str(text), "--out", str(out)])
    assert typed.exit_code == 2 and "'ordered_at'" in typed.output and "timestamp" in typed.output

    infinite = tmp_path / "inf.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": ["a", "a"],
                "ordered_at": pa.array(pd.to_datetime(["2025-01-01", "2025-02-01"])).cast(
                    pa.timestamp("us")
                ),
                "net_revenue": [10.0, float("inf")],
            }
        ),
        infinite,
    )
    finite = runner.invoke(app, ["spark", "score", "--orders", str(infinite), "--out", str(out)])
    assert finite.exit_code == 2, finite.output
    assert (
        "'net_revenue'" in finite.output
        and "'a'" in finite.output
        and "inf" in finite.output.lower()
    )

    missing = runner.invoke(
        app, ["spark", "score", "--orders", str(tmp_path / "none"), "--out", str(out)]
    )
    assert missing.exit_code == 2 and "none" in missing.output
    assert not out.exists()


def test_as_of_before_the_first_order_is_refused(spark, messy) -> None:
    from retain.errors import DataError

    _, orders = messy
    with pytest.raises(DataError, match="before"):
        rs.score(rs.read_orders(spark, str(orders)), as_of="2020-01-01")


def test_orders_after_the_day_do_not_count(spark, messy, tmp_path: Path) -> None:
    """An order after the day scored (the store never took it in) changes nothing."""
    db, orders = messy
    table = pq.read_table(orders)
    late = pa.table(
        {
            "customer_id": ["cust0001"],
            "ordered_at": pa.array([dt.datetime(2025, 10, 1, 0, 30)], table.schema.field(1).type),
            "net_revenue": [80.0],
        }
    )
    later = tmp_path / "later.parquet"
    pq.write_table(pa.concat_tables([table, late.cast(table.schema)]), later)
    with Store(db, read_only=True) as store:
        # the store's as_of setting is the day scored unless another is given
        result = rs.score(rs.read_orders(spark, str(later)), store=store)
    assert result.as_of == dt.date(2025, 9, 30)
    _assert_same_scores(_scores(db), result.scores.toPandas())
    # without a store, the orders' own last day
    alone = rs.score(rs.read_orders(spark, str(later)), model="mbgnbd", segments=False)
    assert alone.as_of == dt.date(2025, 10, 1)
