"""The rule table: every segment reachable, every customer in exactly one, overrides, checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retain.errors import SchemaError
from retain.segments import customer_segments, load_rules
from segments_helpers import random_orders

COMMON_SET = [
    "Champions",
    "Loyal Customers",
    "Potential Loyalists",
    "New Customers",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Can't Lose Them",
    "Hibernating",
    "Lost",
]


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return random_orders(3000, seed=11)


def first_match(scores: pd.DataFrame, rules: list, levels: int) -> pd.Series:
    """The segment of each row by trying the rules in order, with boolean masks."""
    assigned = pd.Series(pd.NA, index=scores.index, dtype="object")
    for rule in rules:
        mask = assigned.isna()
        for key, column in (("r", "r_score"), ("f", "f_score"), ("m", "m_score")):
            low, high = getattr(rule, key) or (1, levels)
            mask &= scores[column].between(low, high)
        assigned[mask] = rule.segment
    return assigned


def test_default_rules_name_the_common_set_with_actions_and_offers() -> None:
    rules = load_rules()
    assert rules.names == COMMON_SET
    for segment in rules.segments:
        assert segment.action and segment.offer and segment.description
    assert "no discount" in rules.segment("Champions").action.lower()
    assert "win-back" in rules.segment("At Risk").action.lower()
    assert "onboarding" in rules.segment("New Customers").action.lower()
    assert "stop mailing" in rules.segment("Lost").action.lower()
    assert "coupon" in rules.segment("Can't Lose Them").action.lower()


@pytest.mark.parametrize("scheme,levels", [("quintiles", 5), ("quartiles", 4)])
def test_every_score_combination_has_exactly_one_segment(scheme: str, levels: int) -> None:
    grid = load_rules().grid(scheme)
    assert len(grid) == levels**3
    assert not grid.duplicated(["r_score", "f_score", "m_score"]).any()
    assert grid["segment"].notna().all()
    assert load_rules().unreachable(scheme) == []


@pytest.mark.parametrize("scheme,levels", [("quintiles", 5), ("quartiles", 4)])
def test_every_segment_is_reached_by_real_customers(
    orders: pd.DataFrame, scheme: str, levels: int
) -> None:
    result = customer_segments(orders, scheme=scheme)
    reached = set(result["segment"])
    if scheme == "quintiles":
        # these customers order every 3 days: a one-order customer in the second recency
        # quintile (140 to 280 days ago) is at high risk, capped below "Promising" (r = 4)
        assert reached == set(COMMON_SET) - {"Promising"}
    else:
        assert reached == set(COMMON_SET)
    # every customer exactly once, and in the segment of the first rule matching their scores
    assert result.index.is_unique
    assert set(result.index) == set(orders["customer_id"])
    expected = first_match(result, list(load_rules().rules[scheme]), levels)
    assert (result["segment"] == expected).all()
    actions = load_rules().table().set_index("segment")["action"]
    assert (result["action"] == result["segment"].map(actions)).all()


def test_segment_names_match_loosely() -> None:
    rules = load_rules()
    assert rules.segment("cant-lose-them").name == "Can't Lose Them"
    assert rules.segment("AT RISK").name == "At Risk"
    with pytest.raises(SchemaError, match="Champions"):
        rules.segment("VIP")


def test_a_rule_file_overrides_segments_and_rules(orders: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(
        """
[[segments]]
name = "Recent"
action = "Say thanks."
offer = "none"
rank = 1
valuable = true

[[segments]]
name = "Dormant"
action = "Wake them up."
offer = "10% off"
rank = 2

[[quintiles]]
segment = "Recent"
r = [4, 5]

[[quintiles]]
segment = "Dormant"

[[quartiles]]
segment = "Recent"
r = 4

[[quartiles]]
segment = "Dormant"
""",
        encoding="utf-8",
    )
    result = customer_segments(orders, rules=path)
    assert set(result["segment"]) == {"Recent", "Dormant"}
    assert ((result["segment"] == "Recent") == (result["r_score"] >= 4)).all()
    assert (result.loc[result["segment"] == "Dormant", "action"] == "Wake them up.").all()
    assert result.attrs["rules"] == str(path)
    quartiles = customer_segments(orders, rules=path, scheme="quartiles")
    assert ((quartiles["segment"] == "Recent") == (quartiles["r_score"] == 4)).all()


def test_a_rule_file_may_replace_only_the_rules(orders: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "rules_only.toml"
    path.write_text(
        '[[quintiles]]\nsegment = "Lost"\nr = [1, 1]\n\n[[quintiles]]\nsegment = "Champions"\n',
        encoding="utf-8",
    )
    rules = load_rules(path)
    assert rules.names == COMMON_SET  # segments and their actions from the default file
    result = customer_segments(orders, rules=rules)
    assert ((result["segment"] == "Lost") == (result["r_score"] == 1)).all()
    assert set(result["segment"]) == {"Lost", "Champions"}


@pytest.mark.parametrize(
    "text,message",
    [
        ('[[quintiles]]\nsegment = "VIP"\n', "no \\[\\[segments\\]\\] entry defines"),
        ('[[quintiles]]\nsegment = "Lost"\nr = [0, 3]\n', "1 <= low <= high <= 5"),
        ('[[quartiles]]\nsegment = "Lost"\nr = [1, 5]\n', "1 <= low <= high <= 4"),
        ('[[quintiles]]\nsegment = "Lost"\nr = [2, 5]\n', "leave 25 score combination"),
        ('[[quintiles]]\nsegment = "Lost"\nx = [1, 5]\n', "unknown key"),
        ('[[quintiles]]\nsegment = "Lost"\nr = "high"\n', "expected \\[low, high\\]"),
        ('[[segments]]\nname = "A"\naction = "x"\n', "lacks offer, rank"),
        ("[extra]\n", "unknown section"),
        ("not toml = = 1\n", "not valid TOML"),
        (
            '[[segments]]\nname="A"\naction="x"\noffer="y"\nrank=1\n'
            '[[segments]]\nname="a"\naction="x"\noffer="y"\nrank=2\n',
            "unique",
        ),
    ],
)
def test_bad_rule_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SchemaError, match=message):
        load_rules(path)


def test_missing_rule_file() -> None:
    with pytest.raises(SchemaError, match="no segment rule file"):
        load_rules("/nonexistent/rules.toml")


def test_unknown_scheme() -> None:
    with pytest.raises(SchemaError, match="quintiles or quartiles"):
        load_rules().grid("deciles")


def test_segment_sizes_follow_the_scores_not_the_input_order(orders: pd.DataFrame) -> None:
    shuffled = orders.iloc[np.random.default_rng(0).permutation(len(orders))]
    a = customer_segments(orders)["segment"]
    b = customer_segments(shuffled)["segment"]
    pd.testing.assert_series_equal(a, b)


def test_recency_caps_come_from_the_rule_file(tmp_path: Path) -> None:
    rules = load_rules()
    assert rules.recency_caps["quintiles"] == {"medium": 3, "high": 2, "lost": 2}
    assert rules.caps("quartiles").set_index("risk")["cap"].to_dict() == {
        "medium": 3,
        "high": 2,
        "lost": 1,
    }
    own = tmp_path / "caps.toml"
    own.write_text("[recency.quintiles]\nlost = 1\n")
    mine = load_rules(own)
    assert mine.recency_caps["quintiles"] == {"lost": 1}
    assert mine.recency_caps["quartiles"] == rules.recency_caps["quartiles"]
    for text, message in (
        ("[recency.quintiles]\nhigh = 6\n", "from 1 to 5"),
        ("[recency.quintiles]\nmedium = 2\nhigh = 3\n", "worse risk"),
        ("[recency.quintiles]\nsevere = 1\n", "unknown risk level"),
        ("[recency.deciles]\nlost = 1\n", "unknown scheme"),
    ):
        own.write_text(text)
        with pytest.raises(SchemaError, match=message):
            load_rules(own)


def test_customers_at_risk_are_kept_out_of_recent_segments() -> None:
    # "late" bought every 10 days, last 100 days ago: among the most recent of a store
    # whose other customers left long ago, but 10 gaps late
    rows = [("late", f"2023-{m:02d}-{d:02d}", 30.0) for m in (1, 2, 3) for d in (1, 11, 21)]
    rows += [(f"old{i}", f"2022-0{1 + i % 9}-15", 20.0) for i in range(30)]
    orders = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "net_revenue"])
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"])
    result = customer_segments(orders, as_of="2023-06-29")
    late = result.loc["late"]
    assert late["churn_risk"] == "lost"
    assert late["r_score"] == 2
    assert late["segment"] == "Can't Lose Them"
    assert (result.drop(index="late")["churn_risk"] == "lost").all()
    assert not result["segment"].isin(["Champions", "Loyal Customers", "New Customers"]).any()
