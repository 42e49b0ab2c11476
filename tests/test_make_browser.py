"""`make browser` (run by `make test`): a busy package manager is waited for, never a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")

LOCKED = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)"


def _tools(tmp_path: Path, apt_get: str) -> dict[str, str]:
    """A PATH holding a fake apt-get (and root's id) and the few tools the recipe uses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mktemp", "grep", "tail", "rm", "sleep", "cat", "sh"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    for name, body in (("apt-get", apt_get), ("id", "echo 0")):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "RETAIN_REQUIRE_BROWSER"}
    env["PATH"] = str(bin_dir)
    env["CALLS"] = str(tmp_path / "calls")
    return env


def _make(env: dict[str, str], **variables: str) -> subprocess.CompletedProcess[str]:
    args = [str(MAKE), "-s", "-C", str(ROOT), "browser", "BROWSER_PAUSE=0"]
    args += [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def _calls(env: dict[str, str]) -> list[str]:
    path = Path(env["CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def test_a_locked_package_manager_is_retried_then_skipped(tmp_path: Path) -> None:
    env = _tools(tmp_path, f'echo "$*" >> "$CALLS"; echo "{LOCKED}" >&2; exit 100')
    result = _make(env, BROWSER_TRIES="3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len([c for c in _calls(env) if c.endswith("update -qq")]) == 3
    assert result.stdout.count("the package manager is busy") == 2
    assert "could not install chromium: " + LOCKED in result.stdout
    assert "the browser tests will be skipped" in result.stdout


def test_a_lock_released_on_a_later_try_installs(tmp_path: Path) -> None:
    env = _tools(
        tmp_path,
        f'echo "$*" >> "$CALLS"; [ $(cat "$CALLS" | grep -c update) -ge 2 ] && exit 0; '
        f'echo "{LOCKED}" >&2; exit 100',
    )
    result = _make(env, BROWSER_TRIES="4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("chromium installed")
    assert any("install -y -qq chromium" in c for c in _calls(env))


def test_another_failure_is_not_retried(tmp_path: Path) -> None:
    env = _tools(
        tmp_path, 'echo "$*" >> "$CALLS"; echo "E: Unable to locate package" >&2; exit 100'
    )
    result = _make(env)
    assert result.returncode == 0
    assert len(_calls(env)) == 1
    assert "could not install chromium: E: Unable to locate package" in result.stdout


def test_in_ci_it_says_the_browser_tests_will_fail(tmp_path: Path) -> None:
    env = _tools(tmp_path, f'echo "{LOCKED}" >&2; exit 100')
    env["RETAIN_REQUIRE_BROWSER"] = "1"
    result = _make(env, BROWSER_TRIES="1")
    assert result.returncode == 0  # the suite runs, and its browser tests fail clearly
    assert "RETAIN_REQUIRE_BROWSER=1, so the browser tests will fail" in result.stdout


def test_ci_requires_the_browser() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "export RETAIN_REQUIRE_BROWSER=1" in script and "make test" in script
