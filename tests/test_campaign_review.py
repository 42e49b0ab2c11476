"""Mistakes a review of `retain campaigns` found: each is refused clearly or handled."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_helpers import people_store, person
from retain.campaigns import load_campaigns, run_campaigns
from retain.campaigns.definitions import example_path, parse_campaigns
from retain.errors import DataError
from retain.store import Store
from test_campaign_runs import HEAD, one_campaign


def test_only_a_message_about_an_order_may_be_transactional() -> None:
    text = HEAD + one_campaign('{ kind = "churn_risk" }', "transactional = true")
    with pytest.raises(DataError, match="cannot be transactional"):
        parse_campaigns(text, "c.toml")
    parse_campaigns(HEAD + one_campaign('{ kind = "post_purchase" }', "transactional = true"))


def test_a_directory_is_not_a_campaign_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read it"):
        load_campaigns(tmp_path)


def test_a_template_failing_at_render_names_the_customer(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a")])
    text = HEAD + one_campaign('{ kind = "post_purchase", days = 0 }').replace(
        "Hi.", "Hi {{ 1 / 0 }}."
    )
    with Store(db) as store, pytest.raises(DataError, match=r"for customer a .*ZeroDivisionError"):
        run_campaigns(store, parse_campaigns(text), now="2025-06-01T12:00:00", dry_run=True)


def test_the_examples_run_on_a_store_without_scores(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a"), person("b")])
    with Store(db) as store:
        result = run_campaigns(
            store, load_campaigns(example_path()), now="2025-06-10T12:00:00", dry_run=True
        )
    assert any("no model scores yet" in note for note in result.notes)


def test_an_audit_run_through_files_sends_nothing_queued_for_email(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a"), person("b")])
    text = HEAD + one_campaign('{ kind = "post_purchase", days = 0 }')
    campaigns = parse_campaigns(
        text.replace("[defaults]", f'[defaults]\noutbox_dir = "{tmp_path}/o"')
    )
    with Store(db) as store:
        run_campaigns(store, campaigns, now="2025-06-01T12:00:00", limit=0)  # queued for e-mail
        run_campaigns(store, campaigns, now="2025-06-01T12:05:00", channel="file")  # no SMTP
        found = store.con.execute("SELECT channel, status FROM campaign_outbox").fetchall()
    assert sorted(found) == [("email", "queued"), ("email", "queued")]
