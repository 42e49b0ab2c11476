"""The README's promises match the code: its command table, its options, its API routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from retain.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def _commands() -> dict[str, set[str]]:
    """Every command of the CLI ("recommend cart" for a subcommand) and its options."""
    found: dict[str, set[str]] = {}

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            elif not command.hidden:
                found[prefix + name] = {o for p in command.params for o in getattr(p, "opts", [])}

    walk(typer.main.get_command(app), "")
    return found


def _command_table() -> dict[str, tuple[bool, bool]]:
    rows = re.findall(
        r"^\| `retain ([a-z -]+)` \|[^|]*\|([^|]*)\|([^|]*)\|$", _section("Commands"), re.M
    )
    return {name: (json.strip() == "yes", period.strip() == "yes") for name, json, period in rows}


def test_the_readme_lists_every_command_and_no_other() -> None:
    assert sorted(_command_table()) == sorted(_commands())


def test_the_readme_says_which_commands_take_json_and_period() -> None:
    table = _command_table()
    for name, options in _commands().items():
        assert table[name] == ("--json" in options, "--period" in options), name


def test_the_readme_makes_no_every_command_promise() -> None:
    assert not re.search(r"every command takes", README, re.I)


def _routes() -> set[str]:
    """The API routes of the service, "GET /api/metrics", as the app holds them."""
    from retain.service.app import create_app

    service = create_app(":memory:", warm=False)
    found: set[str] = set()

    def add(route, prefix: str = "") -> None:
        methods = getattr(route, "methods", None) or set()
        if getattr(route, "include_in_schema", False) and methods:
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            found.update(f"{m} {path}" for m in methods - {"HEAD"})

    for route in service.routes:
        context = getattr(route, "include_context", None)  # an included router (FastAPI >= 0.165)
        if context is not None:
            for inner in context.included_router.routes:
                add(inner, context.prefix)
        else:
            add(route)
    return {r for r in found if " /api/" in r or " /webhooks/" in r}


def test_the_readme_lists_every_api_route_and_no_other() -> None:
    listed = set(
        re.findall(
            r"^\| `((?:GET|POST|PUT|PATCH|DELETE) /(?:api|webhooks)/[^`]*)` \|", README, re.M
        )
    )
    routes = _routes()
    assert len(routes) >= 10
    assert listed == routes, {"missing": routes - listed, "not in the code": listed - routes}


@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_the_first_screen_says_what_retain_is_then_how_to_start(command: str) -> None:
    first_screen = "\n".join(README.splitlines()[:25])
    assert "customer lifetime value" in first_screen
    assert command in first_screen
