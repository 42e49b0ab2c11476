"""The benchmark harness (benchmarks/harness.py): what its figures say must be true.

Correctness only: no timing is asserted (the machine is shared).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_cli  # noqa: E402
import harness  # noqa: E402
from harness import BenchError, Run  # noqa: E402

PRINT_PID = (
    "import os, json; print('noise'); print(json.dumps({'seconds': 0.5, 'pid': os.getpid()}))"
)


def test_spread_is_the_median_min_and_max_of_the_runs() -> None:
    assert harness.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert harness.spread([4.0, 1.0]) == {"median": 2.5, "min": 1.0, "max": 4.0}
    assert harness.spread([0.12345], digits=2) == {"median": 0.12, "min": 0.12, "max": 0.12}
    with pytest.raises(ValueError):
        harness.spread([])


def test_columns_name_the_median_and_its_range() -> None:
    assert harness.columns("", [1.0, 5.0, 2.0]) == {"seconds": 2.0, "min_s": 1.0, "max_s": 5.0}
    assert harness.columns("lifetimes", [7.0, 6.0, 9.0]) == {
        "lifetimes_s": 7.0,
        "lifetimes_min_s": 6.0,
        "lifetimes_max_s": 9.0,
    }


def test_the_load_before_and_after_and_the_cpu_count_are_recorded(monkeypatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (1.234, 0.5, 0.25))
    assert harness.load_1m() == 1.23
    assert harness.machine_load(0.5) == {"load_1m": "0.50 -> 1.23", "cpus": os.cpu_count()}
    assert harness.machine_load(0.5, 2.0)["load_1m"] == "0.50 -> 2.00"


def test_runs_default_to_three_and_follow_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("RETAIN_BENCH_RUNS", raising=False)
    assert harness.runs_wanted() == 3
    monkeypatch.setenv("RETAIN_BENCH_RUNS", "5")
    assert harness.runs_wanted() == 5


def test_every_run_is_a_fresh_process() -> None:
    command = [sys.executable, "-c", PRINT_PID]
    runs = [harness.run_fresh(command) for _ in range(3)]
    pids = {r.pid for r in runs}
    assert len(pids) == 3 and os.getpid() not in pids
    # the child's own word: the pid it printed is the process the parent started
    assert [r.out["pid"] for r in runs] == [r.pid for r in runs]


def test_the_sides_take_turns_and_each_run_is_its_own_process() -> None:
    order: list[str] = []

    def side(name: str):
        def start() -> Run:
            order.append(name)
            return harness.run_fresh([sys.executable, "-c", PRINT_PID])

        return start

    done = harness.interleaved({"retain": side("retain"), "peer": side("peer")}, runs=2)
    assert order == ["retain", "peer", "retain", "peer"]
    assert len({r.pid for runs in done.values() for r in runs}) == 4


def test_a_child_without_a_json_line_is_timed_by_its_wall_clock() -> None:
    run = harness.run_fresh([sys.executable, "-c", "print('hello')"])
    assert run.out == {} and run.seconds == run.wall_s


def test_the_peak_memory_is_the_childs_own() -> None:
    big = harness.run_fresh(
        [sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    )
    small = harness.run_fresh([sys.executable, "-c", "pass"])
    assert big.peak_mb >= 300
    # not this test process's memory, which a child's peak would start from (> 100 MB)
    assert small.peak_mb < 60


def test_a_failing_child_says_what_failed() -> None:
    with pytest.raises(BenchError, match="ValueError: no such thing"):
        harness.run_fresh([sys.executable, "-c", "raise ValueError('no such thing')"])


def test_report_prints_the_seconds_pid_and_peak(capsys) -> None:
    harness.report(1.5, customers=10)
    line = capsys.readouterr().out.strip()
    assert harness._last_json(line) == {
        "seconds": 1.5,
        "pid": os.getpid(),
        "peak_mb": round(harness.own_peak_mb()),
        "customers": 10,
    }


def test_a_comparison_row_divides_the_medians_and_checks_the_same_work() -> None:
    def runs(seconds: list[float], **out: float) -> list[Run]:
        return [
            Run(wall_s=s + 1, peak_mb=100.0, pid=i, out={"seconds": s, **out})
            for i, s in enumerate(seconds)
        ]

    same = {"customers": 10, "frequency_total": 4.0, "p_alive_mean": 0.5, "clv_total": 20.0}
    row = bench_cli.versus(
        "fit",
        {"retain": runs([1.0, 3.0, 2.0], **same), "lifetimes": runs([40.0, 10.0, 20.0], **same)},
        ">= 20x lifetimes (at 1M)",
        {"load_1m": "1.00 -> 1.00", "cpus": 2},
    )
    assert (row["seconds"], row["min_s"], row["max_s"]) == (2.0, 1.0, 3.0)
    assert (row["lifetimes_0.11.3_s"], row["lifetimes_0.11.3_min_s"]) == (20.0, 10.0)
    assert row["speedup_vs_lifetimes"] == 10.0  # the medians' ratio, not a best against one
    assert row["same_customers"] is True and row["p_alive_mean_diff"] == 0 and row["clv_ratio"] == 1
    assert "met" not in row  # the target is at 1M customers
    assert row["cpus"] == 2 and row["load_1m"] == "1.00 -> 1.00"


def test_results_keep_the_sections_this_run_did_not_make(tmp_path, monkeypatch) -> None:
    import run as run_py

    monkeypatch.setattr(run_py, "machine", lambda: "a test machine")
    path = tmp_path / "RESULTS.md"
    path.write_text(
        "# Benchmark results\n\nold header\n\n## ingest\n\n| name |\n|---|\n| old ingest |\n\n"
        "## service\n\n| name |\n|---|\n| old service |\n\n### With writes\n\nnotes kept\n"
    )
    run_py.write_results(
        {"ingest": [{"name": "new ingest", "seconds": 1.0}], "cli": [{"name": "cli row"}]},
        1_000_000,
        path,
        {"ingest": "0.50 -> 0.70 on 2 CPUs"},
    )
    text = path.read_text()
    assert "old header" not in text and "Method: Each timed call runs in a fresh process" in text
    assert "old ingest" not in text and "| new ingest | 1.0 |" in text
    assert "load average (1 min) before and after: 0.50 -> 0.70 on 2 CPUs" in text
    assert "old service" in text and "notes kept" in text  # not re-run: left as it was
    assert list(run_py.sections_of(text)) == ["ingest", "service", "cli"]
    # another size is a section of its own
    run_py.write_results({"cli": [{"name": "small"}]}, 20_000, path)
    sections = run_py.sections_of(path.read_text())
    assert list(sections) == ["ingest", "service", "cli", "cli at 20,000 customers"]
    assert "cli row" in sections["cli"] and "small" in sections["cli at 20,000 customers"]


def test_the_cli_rows_check_themselves() -> None:
    """bench_cli.check_rows, on given rows (the benchmark checks its own on every run)."""

    def row(name: str, median: float, low: float, high: float, peak: float = 100.0) -> dict:
        figures = {"seconds": median, "min_s": low, "max_s": high, "peak_mb": peak}
        return {"name": name, **figures, "load_1m": "1.00 -> 1.00", "cpus": 2}

    good = [
        row("retain ingest (300 customers)", 2.0, 1.0, 3.0, 120.0),
        row("retain fit (300 customers)", 2.0, 1.0, 3.0),
        row("retain score (300 customers)", 2.0, 1.0, 3.0),
        row("CLI path: retain ingest + fit + score (the three)", 6.0, 3.0, 9.0, 120.0),
        row("Python API path: Parquet -> scores", 1.0, 0.5, 1.5),
        row("DuckDB's summary query alone", 0.5, 0.4, 0.6),
    ]
    bench_cli.check_rows(good)
    with pytest.raises(BenchError, match="out of order"):
        bench_cli.check_rows([*good[:5], row("DuckDB's summary query alone", 0.5, 0.6, 0.4)])
    with pytest.raises(BenchError, match="shorter than its steps"):
        bench_cli.check_rows([*good[:3], row(good[3]["name"], 6.0, 2.0, 9.0, 120.0), *good[4:]])
    with pytest.raises(BenchError, match="peak"):
        bench_cli.check_rows([*good[:3], row(good[3]["name"], 6.0, 3.0, 9.0, 90.0), *good[4:]])
    with pytest.raises(BenchError, match="no \\['cpus'\\]"):
        bench_cli.check_rows([*good[:5], {k: v for k, v in good[5].items() if k != "cpus"}])
