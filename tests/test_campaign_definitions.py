"""Campaign files: the examples are valid, and every mistake names its line and field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retain.campaigns import example_path, load_campaigns
from retain.campaigns.definitions import parse_campaigns
from retain.cli import app
from retain.errors import DataError

MINIMAL = """
[defaults]
sender = "Shop <shop@example.com>"

[[campaign]]
name = "first"
trigger = { kind = "overdue" }
subject = "Hello {{ customer.name }}"
text = "Come back"
"""


def test_the_examples_are_valid_and_cover_every_seed_tactic() -> None:
    checked = load_campaigns(example_path())
    kinds = {c.trigger.kind for c in checked.campaigns}
    assert kinds == {
        "next_purchase_window",
        "churn_risk",
        "post_purchase",
        "overdue",
        "birthday",
        "anniversary",
        "broadcast",
    }
    assert checked.defaults.quiet_hours is not None
    assert checked.get("win-back").control_share == 0.1
    assert [v.name for v in checked.get("win-back").variants] == ["we-miss-you", "offer"]


def test_defaults_apply_when_not_given() -> None:
    checked = parse_campaigns(MINIMAL)
    campaign = checked.get("first")
    assert campaign.trigger.options == {"factor": 1.5}
    assert campaign.channel == "email" and not campaign.transactional
    assert checked.defaults.caps == {"day": 1, "week": 3, "month": 8}
    assert campaign.line == 6


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        (
            ('text = "Come back"', 'text = "Come back"\ncolour = "red"'),
            10,
            "unknown field 'colour'",
        ),
        (('kind = "overdue"', 'kind = "sometimes"'), 7, "unknown trigger 'sometimes'"),
        (('kind = "overdue"', 'kind = "overdue", factor = -1'), 7, "factor must be above 0"),
        (('kind = "overdue"', 'kind = "post_purchase", weeks = 2'), 7, "no option 'weeks'"),
        (('name = "first"', 'name = "First Campaign"'), 6, "campaign name"),
        (("{{ customer.name }}", "{{ customer.name }"), 8, "subject template"),
        (('text = "Come back"', 'text = "Come back"\nchannel = "pigeon"'), 10, "unknown channel"),
        (('text = "Come back"', 'text = "x"\ncontrol_share = 1.5'), 10, "control_share"),
        (
            ('text = "Come back"', 'text = "x"\naudience = { segments = ["Loyal"] }'),
            10,
            "unknown segment 'Loyal'",
        ),
        (('sender = "Shop <shop@example.com>"', 'sender = "Shop"'), 3, "no e-mail address"),
        (('kind = "overdue"', 'kind = "segment_entered"'), 7, "segment_entered needs segment"),
        (
            ('kind = "overdue"', 'kind = "segment_left", segment = "Loyal"'),
            7,
            "unknown segment 'Loyal'",
        ),
        (('sender = "Shop <shop@example.com>"', 'sender = "a@b"\ncaps = { hour = 2 }'), 4, "hour"),
        (
            (
                'sender = "Shop <shop@example.com>"',
                'quiet_hours = { start = "25:00", end = "08:00" }',
            ),
            3,
            "start",
        ),
    ],
)
def test_a_mistake_names_the_file_line_and_field(
    change: tuple[str, str], line: int, words: str
) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    with pytest.raises(DataError) as caught:
        parse_campaigns(text, "shop.toml")
    message = str(caught.value)
    assert message.startswith(f"file shop.toml: line {line}:"), message
    assert words in message


NEWSLETTER = """
[defaults]
sender = "Shop <shop@example.com>"

[[campaign]]
name = "news"
trigger = { kind = "broadcast", at = "2025-07-01T09:00:00" }
auto_winner = { test_share = 0.2, metric = "clicks" }

[[campaign.variants]]
name = "plain"
subject = "News"
text = "https://shop.example/a"

[[campaign.variants]]
name = "bold"
subject = "NEWS!"
text = "https://shop.example/b"
"""


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (('kind = "broadcast", at = "2025-07-01T09:00:00"', 'kind = "overdue"'), "a broadcast"),
        (("test_share = 0.2", "test_share = 1"), "test_share = 1"),
        (('metric = "clicks"', 'metric = "opens"'), "metric = 'opens'"),
        (
            (
                '[[campaign.variants]]\nname = "bold"\nsubject = "NEWS!"\ntext = "https://shop.example/b"',
                "",
            ),
            "two variants or more",
        ),
        (
            ('sender = "Shop <shop@example.com>"', 'sender = "a@b.example"\ntrack_clicks = false'),
            "no click is counted",
        ),
    ],
)
def test_a_newsletter_test_that_cannot_decide_is_refused(
    change: tuple[str, str], words: str
) -> None:
    parse_campaigns(NEWSLETTER)  # as it stands, it is valid
    text = NEWSLETTER.replace(*change)
    assert text != NEWSLETTER
    with pytest.raises(DataError) as caught:
        parse_campaigns(text, "shop.toml")
    message = str(caught.value)
    line = text.splitlines().index(next(t for t in text.splitlines() if "auto_winner" in t))
    assert message.startswith(f"file shop.toml: line {line + 1}:"), message
    assert words in message


def test_invalid_toml_and_duplicates_and_missing_campaigns() -> None:
    with pytest.raises(DataError, match=r"not valid TOML .*line 3"):
        parse_campaigns('[defaults]\nsender = "a@b"\nname = \n', "x.toml")
    with pytest.raises(DataError, match="used twice"):
        parse_campaigns(MINIMAL + MINIMAL.split("[defaults]", 1)[1].split("\n", 2)[2])
    with pytest.raises(DataError, match="no \\[\\[campaign\\]\\] table"):
        parse_campaigns('[defaults]\nsender = "a@b"\n')


def test_broadcast_moment_and_quiet_hours_are_read() -> None:
    text = MINIMAL.replace(
        'kind = "overdue"', 'kind = "broadcast", at = "2026-01-05T10:00"'
    ).replace(
        'sender = "Shop <shop@example.com>"',
        'sender = "a@b"\nquiet_hours = { start = "21:00", end = "08:00" }',
    )
    checked = parse_campaigns(text)
    assert checked.get("first").trigger.options["at"] == dt.datetime(2026, 1, 5, 10, 0)
    quiet = checked.defaults.quiet_hours
    assert quiet is not None
    assert quiet.holds(dt.datetime(2026, 1, 1, 22, 30)) and quiet.holds(
        dt.datetime(2026, 1, 1, 7, 59)
    )
    assert not quiet.holds(dt.datetime(2026, 1, 1, 8, 0))
    assert quiet.next_end(dt.datetime(2026, 1, 1, 22, 30)) == dt.datetime(2026, 1, 2, 8, 0)
    assert quiet.next_end(dt.datetime(2026, 1, 2, 3, 0)) == dt.datetime(2026, 1, 2, 8, 0)


def test_cli_init_validate_and_list(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "campaigns.toml"
    result = runner.invoke(app, ["campaigns", "init", "--out", str(out)])
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["campaigns", "init", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    checked = runner.invoke(app, ["campaigns", "validate", str(out)])
    assert checked.exit_code == 0 and "7 campaigns, all valid" in checked.output
    listed = runner.invoke(app, ["campaigns", "list", "--campaigns", str(out), "--json"])
    assert listed.exit_code == 0
    assert "win-back" in listed.output and "churn_risk" in listed.output
    lines = out.read_text().splitlines()
    line = lines.index('name = "win-back"') + 2  # the line after it, counted from 1
    out.write_text(out.read_text().replace('name = "win-back"', 'name = "win-back"\nsend_at = 3'))
    bad = runner.invoke(app, ["campaigns", "validate", str(out)])
    assert bad.exit_code == 2
    assert f"line {line}:" in bad.output and "unknown field 'send_at'" in bad.output
    assert "Traceback" not in bad.output
    missing = runner.invoke(app, ["campaigns", "validate", str(tmp_path / "none.toml")])
    assert missing.exit_code == 2 and "no campaign file" in missing.output
