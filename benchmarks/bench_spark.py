"""Spark benchmark: ``retain spark score`` on ``local[2]`` beside the store's path.

    python benchmarks/bench_spark.py [--customers 1000000,6250000] [--master local[2]] [--write]

On the orders of ``benchmarks/generate.py`` (seed 0), observation date 2026-01-01:

- Spark: ``retain spark score --orders orders.parquet --out DIR`` (fit included, the
  models compared on a holdout as ``retain fit`` does), a fresh process;
- the store: ``retain ingest`` + ``retain fit`` + ``retain score`` into a new store,
  each a fresh process, on the same file.

Wall seconds of each, and peak resident memory summed over the process and every
process it starts (Spark's JVM, its Python workers), sampled every 0.2 s; for Spark also
the JVM's peak and the Python workers' peak apart. One run a side (Spark's runs are
long); the machine's load before and after is recorded. The figures go to stdout as JSON
and, with ``--write``, to RESULTS.md's "## spark" section (``make bench-spark``: 1M
customers, 3.2M orders, and 6.25M customers, 20.2M orders).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import load_1m, machine_load  # noqa: E402

OBSERVATION_END = "2026-01-01"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _group_rss(group: int) -> dict[str, int]:
    """Resident bytes of the processes of session ``group``, by kind (java, python)."""
    found = {"java": 0, "python": 0, "other": 0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) != group:  # the session id
            continue
        kind = "java" if name == "java" else "python" if name.startswith("python") else "other"
        found[kind] += int(fields[21]) * PAGE
    return found


def run(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` in a session of its own: wall seconds and peak memory (MB)."""
    peaks = {"total": 0, "java": 0, "python": 0}
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
        text=True,
    )
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = _group_rss(proc.pid)
            peaks["total"] = max(peaks["total"], sum(rss.values()))
            peaks["java"] = max(peaks["java"], rss["java"])
            peaks["python"] = max(peaks["python"], rss["python"])
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {err.strip().splitlines()[-1:]}")
    return {
        "wall_s": round(wall, 1),
        "peak_mb": round(peaks["total"] / 2**20),
        "jvm_peak_mb": round(peaks["java"] / 2**20),
        "python_peak_mb": round(peaks["python"] / 2**20),
        "stdout": out,
    }


def bench(customers: int, master: str, driver_memory: str, store: bool) -> dict[str, Any]:
    """Both paths on the generated orders of ``customers`` customers."""
    from run import data_dir

    data = data_dir(customers)
    orders = data / "orders.parquet"
    retain = str(Path(sys.executable).parent / "retain")
    before = load_1m()
    work = Path(tempfile.mkdtemp(prefix="bench-spark-", dir=data))
    env = {**os.environ, "PYSPARK_SUBMIT_ARGS": f"--driver-memory {driver_memory} pyspark-shell"}
    try:
        spark = run(
            [retain, "spark", "score", "--orders", str(orders), "--out", str(work / "scores"),
             "--master", master, "--as-of", OBSERVATION_END, "--json"],
            env=env,
        )  # fmt: skip
        report = json.loads(spark.pop("stdout"))
        rows: dict[str, Any] = {
            "generated": customers,
            "customers": report["customers"],
            "model": report["fit"]["model"],
            "spark": spark,
        }
        if store:
            db = work / "bench.duckdb"
            steps = {}
            for name, command in (
                ("ingest", [retain, "ingest", "--db", str(db), "--as-of", OBSERVATION_END, str(orders)]),
                ("fit", [retain, "fit", "--db", str(db), "--as-of", OBSERVATION_END]),
                ("score", [retain, "score", "--db", str(db), "--as-of", OBSERVATION_END]),
            ):  # fmt: skip
                steps[name] = run(command)
                steps[name].pop("stdout")
            rows["store"] = {
                "wall_s": round(sum(s["wall_s"] for s in steps.values()), 1),
                "peak_mb": max(s["peak_mb"] for s in steps.values()),
                "steps": {k: {"wall_s": v["wall_s"], "peak_mb": v["peak_mb"]} for k, v in steps.items()},
            }  # fmt: skip
            rows["spark_over_store"] = round(spark["wall_s"] / rows["store"]["wall_s"], 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows.update(machine_load(before), master=master)
    return rows


def section(results: list[dict[str, Any]], orders: dict[int, int], command: str) -> str:
    """RESULTS.md's "## spark" section for these runs."""
    import datetime as dt

    from run import machine

    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## spark",
        "",
        f"Run: {when} on {machine()}, `{command}`. One run a side, each a fresh process; "
        "peak memory summed over the process and every process it starts (Spark's JVM and "
        "its Python workers), sampled every 0.2 s. Spark: `retain spark score` (the fit "
        "included: the three models compared on a holdout, as `retain fit`); the store: "
        "`retain ingest` + `retain fit` + `retain score`, on the same Parquet file.",
        "",
        "| customers | orders | master | spark s | spark peak MB | JVM peak MB | Python "
        "workers + driver peak MB | store s (ingest / fit / score) | store peak MB | spark / "
        "store | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        spark, store = r["spark"], r.get("store")
        steps = " / ".join(f"{v['wall_s']}" for v in store["steps"].values()) if store else ""
        lines.append(
            f"| {r['customers']:,} | {orders[r['generated']]:,} | {r['master']} | "
            f"{spark['wall_s']} | {spark['peak_mb']:,} | {spark['jvm_peak_mb']:,} | "
            f"{spark['peak_mb'] - spark['jvm_peak_mb']:,} | "
            + (f"{store['wall_s']} ({steps}) | {store['peak_mb']:,} | {r['spark_over_store']}x"
               if store else " | | ")
            + f" | {r['load_1m']} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = HERE / "RESULTS.md") -> None:
    """Put ``text`` in place of RESULTS.md's "## spark" section, or after the others."""
    from run import sections_of

    old = path.read_text()
    head = old[: old.index("\n## ") + 1] if "\n## " in old else old
    sections = sections_of(old)
    sections["spark"] = text
    path.write_text(head + "\n".join(b.rstrip("\n") + "\n" for b in sections.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="1000000", help="sizes, comma-separated")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--no-store", action="store_true", help="Spark's side only.")
    parser.add_argument("--write", action="store_true", help="Write RESULTS.md's section.")
    parser.add_argument("--from-json", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.from_json:  # runs already made, written up
        results = [json.loads(p.read_text()) for p in args.from_json]
    else:
        results = [
            bench(int(n), args.master, args.driver_memory, not args.no_store)
            for n in args.customers.split(",")
        ]
    print(json.dumps(results, indent=2))
    if args.write:
        import duckdb

        from run import data_dir

        orders = {
            r["generated"]: duckdb.sql(
                f"SELECT count(*) FROM read_parquet('{data_dir(r['generated']) / 'orders.parquet'}')"
            ).fetchall()[0][0]
            for r in results
        }
        command = (
            "python benchmarks/bench_spark.py --customers "
            + ",".join(str(r["customers"]) for r in results)
            + " --write"
        )
        write_section(section(results, orders, command))


if __name__ == "__main__":
    main()
