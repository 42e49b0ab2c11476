"""How every peer comparison and the CLI benchmark are timed: the same way on both sides.

- Each timed call runs in a fresh process: a child interpreter (or ``retain`` command)
  started for that run alone, which reads its inputs (not timed), makes the one call,
  times it and prints one JSON line (:func:`report`). No warm-up call, no best-of.
- Both sides do the same work: the same input file, the same observation date, the same
  horizons (P(alive), purchases in 90 days, CLV over 12 months).
- ``runs`` runs per side (default 3; ``run.py --runs N`` sets ``RETAIN_BENCH_RUNS``),
  the sides interleaved (retain, peer, retain, peer, ...) so that a change in the
  machine's load falls on both; a figure is the median, with the min and the max.
- The 1-minute load average before and after, and the CPU count, go into every row
  (:func:`machine_load`): a figure measured beside other work says so.

Only the standard library here: the peer scripts, run by lifetimes' own interpreter,
import it too.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_RUNS = 3
METHOD = (
    "Each timed call runs in a fresh process (one child per run: it reads its inputs, "
    "untimed, then makes the one call and times it), with no warm-up call; both sides of a "
    "comparison do the same work on the same file, with the same observation date and "
    "horizons, in interleaved runs. A figure is the median of the runs, with min and max. "
    "Peak memory is the child's own maximum resident set. load_1m is the 1-minute load "
    "average before and after the benchmark, beside the CPU count: above the CPU count, "
    "other work shared the machine. Rows labelled 'warm' time repeated calls in one "
    "process (best of 3 after a warm-up) and compare with no peer."
)


class BenchError(RuntimeError):
    """A benchmark child failed: its command and the last line it wrote to stderr."""


def runs_wanted() -> int:
    """How many runs per side: ``RETAIN_BENCH_RUNS`` (set by ``run.py --runs``), else 3."""
    value = os.environ.get("RETAIN_BENCH_RUNS", "")
    return max(1, int(value)) if value.strip() else DEFAULT_RUNS


def runs_label(runs: int) -> str:
    """ "1 run", "3 runs"."""
    return f"{runs} run" if runs == 1 else f"{runs} runs"


def load_1m() -> float:
    """The machine's 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def machine_load(before: float, after: float | None = None) -> dict[str, Any]:
    """Row columns: the 1-minute load before and after, and the CPU count."""
    after = load_1m() if after is None else after
    return {"load_1m": f"{before:.2f} -> {after:.2f}", "cpus": os.cpu_count()}


def spread(values: Iterable[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max of some runs' figures."""
    data = list(values)
    if not data:
        raise ValueError("no runs to summarise")
    return {
        "median": round(statistics.median(data), digits),
        "min": round(min(data), digits),
        "max": round(max(data), digits),
    }


def columns(prefix: str, values: Iterable[float], digits: int = 3) -> dict[str, float]:
    """``{prefix}_s`` (the median), ``{prefix}_min``, ``{prefix}_max``; prefix "" gives
    seconds, min_s, max_s."""
    s = spread(values, digits)
    if not prefix:
        return {"seconds": s["median"], "min_s": s["min"], "max_s": s["max"]}
    return {f"{prefix}_s": s["median"], f"{prefix}_min_s": s["min"], f"{prefix}_max_s": s["max"]}


@dataclass
class Run:
    """One fresh process: its whole wall time and peak memory as the parent saw them, its
    pid, and the JSON line it printed last (``{}`` when it printed none)."""

    wall_s: float
    peak_mb: float
    pid: int
    out: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """The timed call's seconds as the child reported them, else the process's."""
        return float(self.out.get("seconds", self.wall_s))


# Starts the command and reports its own wall time, peak memory and exit code. A small
# interpreter between: on Linux a process's maximum resident set starts from its
# parent's at the fork (and is kept through exec), so a command started straight from a
# big parent (pytest, a benchmark holding a data set) would be charged the parent's.
LAUNCHER = """
import os, sys, time
report, command = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
with open(report, "w") as out:
    out.write(f"{wall} {usage.ru_maxrss} {pid} {code}")
sys.exit(0 if code == 0 else 1)
"""


def run_fresh(
    command: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600,
) -> Run:
    """Run ``command`` as a new process and wait for it: its wall seconds, its pid and
    its own peak resident memory (``wait4``'s rusage of that process alone), through a
    small launcher so that the figure is not this process's (see ``LAUNCHER``)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".txt") as figures,
    ):
        launcher = [sys.executable, "-S", "-c", LAUNCHER, figures.name, *command]
        proc = subprocess.Popen(
            launcher, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True
        )
        timer = threading.Timer(timeout_s, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        fields = figures.read().split()
    if proc.returncode != 0 or len(fields) != 4:
        code = fields[3] if len(fields) == 4 else proc.returncode
        last = stderr.strip().splitlines()[-1:] or [f"exit code {code}"]
        raise BenchError(f"{' '.join(command)}: {last[0]}")
    wall, maxrss_kb, pid = float(fields[0]), int(fields[1]), int(fields[2])
    return Run(wall_s=wall, peak_mb=maxrss_kb / 1024, pid=pid, out=_last_json(stdout))


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def interleaved(
    sides: Mapping[str, Callable[[], Run]], runs: int | None = None
) -> dict[str, list[Run]]:
    """``runs`` runs of every side, in turn (a, b, a, b, ...)."""
    runs = runs_wanted() if runs is None else runs
    done: dict[str, list[Run]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, start in sides.items():
            done[name].append(start())
    return done


def python_call(script: Path, call: str, *args: object, python: str | None = None) -> list[str]:
    """The command that makes one call of ``script`` (``script CALL ARGS...``) in a fresh
    interpreter: retain's by default, or ``python`` (the peer venv's)."""
    return [python or sys.executable, str(script), call, *(str(a) for a in args)]


def peer_python() -> str | None:
    """The peer venv's interpreter (lifetimes 0.11.3, made by ``make bench``), if there."""
    python = HERE / ".venv-peers" / "bin" / "python"
    return str(python) if python.exists() else None


def own_peak_mb() -> float:
    """This process's own high-water resident memory (``VmHWM``), in MB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(seconds: float, **figures: Any) -> None:
    """What a child prints last: the timed call's seconds, its pid, its peak memory and
    any figures that show both sides did the same work."""
    line = {"seconds": seconds, "pid": os.getpid(), "peak_mb": round(own_peak_mb()), **figures}
    print(json.dumps(line), flush=True)
