"""The feedback loop: language, topics and tone measured against a labelled set written by
hand in five languages; discovery of a theme the taxonomy lacks; pain points on a
simulated store where one topic's complainers churn at twice the base rate; the CLI's
``feedback tag`` on good and bad rows; tagging at ingest and again with a new taxonomy."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import DataError
from retain.feedback import parse_taxonomy, retag, shipped_taxonomy, tag, tags_frame
from retain.feedback.discovery import discover, promote
from retain.feedback.painpoints import pain_point, pain_points, risk_ratio
from retain.ingest import ingest
from retain.store import Store

DATA = Path(__file__).parent / "data" / "feedback"
LANGUAGES = ("ar", "en", "ru", "th", "vi")


def _labelled(language: str, folder: Path = DATA) -> list[dict]:
    path = folder / f"{language}.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def measure(rows: list[dict]) -> dict[str, float]:
    """Micro precision and recall of the topics, accuracy of the tone and of the language."""
    found = tag([r["text"] for r in rows], stars=[r.get("rating") for r in rows])
    tp = fp = fn = 0
    for row, tags in zip(rows, found, strict=True):
        gold, got = set(row["topics"]), set(tags.topics)
        tp, fp, fn = tp + len(gold & got), fp + len(got - gold), fn + len(gold - got)
    return {
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "sentiment": float(
            np.mean([t.sentiment == r["sentiment"] for r, t in zip(rows, found, strict=True)])
        ),
        "language": float(
            np.mean([t.language == r["feedback_id"][:2] for r, t in zip(rows, found, strict=True)])
        ),
    }


@pytest.mark.parametrize("language", LANGUAGES)
def test_labelled_set(language: str) -> None:
    rows = _labelled(language)
    assert len(rows) >= 60
    got = measure(rows)
    assert got["language"] >= 0.95, got
    assert got["precision"] >= 0.8, got
    assert got["recall"] >= 0.8, got
    assert got["sentiment"] >= 0.8, got


@pytest.mark.parametrize("language", LANGUAGES)
def test_held_out_set(language: str) -> None:
    """A second set per language, written apart and never used to choose the phrases: how
    the tagger does on texts it was not tuned on (the closing note reports the figures);
    the floor catches a change that helps the tuning sets at the cost of the others."""
    rows = _labelled(language, DATA / "holdout")
    assert len(rows) >= 60
    got = measure(rows)
    assert got["language"] >= 0.95, got
    assert min(got["precision"], got["recall"]) >= 0.7, got
    assert got["sentiment"] >= 0.75, got


def test_negation_turns_the_tone() -> None:
    found = tag(
        [
            "not bad at all",
            "the box was not damaged, thank you",
            "not good",
            "Доставка не быстрая",
            "không hài lòng",
            "ไม่ดีเลย",
            "مش حلو",
        ]
    )
    assert [t.sentiment for t in found] == [
        "positive",
        "positive",
        "negative",
        "negative",
        "negative",
        "negative",
        "negative",
    ]


def test_ratings_decide_and_mixed_scripts_keep_their_words() -> None:
    found = tag(
        ["great stuff", "ส่งช้ามาก size ไม่ตรง", "giao hang cham qua"],
        stars=[1, None, None],
        nps=[None, None, None],
    )
    assert found[0].sentiment == "negative" and found[0].sentiment_from == "rating"
    assert found[1].language == "th" and {"delivery", "fit"} <= set(found[1].topics)
    # Vietnamese typed without its diacritics still finds its phrases
    assert found[2].language == "vi" and "delivery" in found[2].topics


def test_a_taxonomy_file_is_checked() -> None:
    with pytest.raises(DataError, match=r"\[gift\] has colour"):
        parse_taxonomy('[gift]\nname = "Gift"\ncolour = ["red"]\n', "my.toml")
    with pytest.raises(DataError, match="not a taxonomy file"):
        parse_taxonomy("[gift\n", "my.toml")


# -- discovery ----------------------------------------------------------------------------


def _planted(seed: int = 1, n: int = 3000) -> tuple[list[str], set[int]]:
    rng = np.random.default_rng(seed)
    english = [r["text"] for r in _labelled("en")]
    filler = [
        "honestly",
        "overall",
        "basically",
        "anyway",
        "yesterday",
        "today",
        "morning",
        "evening",
        "weekend",
        "husband",
        "wife",
        "son",
        "daughter",
        "friend",
        "colleague",
        "birthday",
        "christmas",
        "holiday",
        "office",
        "garden",
        "kitchen",
    ]
    heads = ["the gift wrapping", "gift wrap", "the gift wrapping service", "gift wrapping"]
    tails = [
        "was missing its ribbon",
        "looked cheap",
        "was not offered at checkout",
        "came undone",
        "was ugly",
        "costs extra now",
        "was forgotten",
        "had a torn bow",
    ]
    texts, planted = [], set()
    for i in range(n):
        if rng.random() < 0.05:
            texts.append(f"{rng.choice(heads)} {rng.choice(tails)} {rng.choice(filler)}")
            planted.add(i)
        else:
            words = str(rng.choice(english)).split()
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(filler)))
            texts.append(" ".join(words))
    return texts, planted


def test_discovery_finds_a_planted_theme() -> None:
    texts, planted = _planted()
    themes = discover(texts, shipped_taxonomy())
    gift = [t for t in themes if {"gift", "wrapping"} <= set(t["terms"])]
    assert len(gift) == 1, [t["terms"] for t in themes]
    members = set(gift[0]["members"])
    assert len(members & planted) >= 0.9 * len(planted)
    assert len(members & planted) >= 0.6 * len(members)
    # promoted, the theme becomes a topic that tags those texts
    taxonomy = parse_taxonomy(promote(shipped_taxonomy(), gift[0], "gift_wrap"), "promoted")
    assert "gift_wrap" in taxonomy.topics
    tagged = tag([texts[i] for i in sorted(planted)], taxonomy=taxonomy)
    assert np.mean(["gift_wrap" in t.topics for t in tagged]) >= 0.9


# -- pain points ----------------------------------------------------------------------------


def test_risk_ratio_of_one_stratum_is_the_ratio_of_rates() -> None:
    ratio, low, high = risk_ratio(
        pd.DataFrame({"stage": [1], "n": [100.0], "churned": [30.0]}),
        pd.DataFrame({"stage": [1], "n": [1000.0], "churned": [150.0]}),
    )
    assert ratio == pytest.approx(2.0)
    assert low < 2.0 < high


COMPLAINTS = {
    "delivery": ["my parcel arrived two weeks late", "still waiting for my order, courier lost it"],
    "price": ["prices went up again, too expensive", "cheaper elsewhere, not worth the price"],
    "service": ["customer service never replied", "support was rude on the phone"],
}


def simulated_store(folder: Path, seed: int = 7, customers: int = 3000) -> Path:
    """Customers buy every 20 days on average and, after each order, stop for good with
    probability 8%; after 15% of orders they complain a few days later, of delivery,
    price or service; a delivery complaint doubles that order's chance of stopping."""
    rng = np.random.default_rng(seed)
    start, end = dt.datetime(2023, 1, 1), dt.datetime(2025, 6, 30)
    orders, feedback = [], []
    for c in range(customers):
        at = start + dt.timedelta(days=float(rng.uniform(0, 500)))
        n = 0
        while at < end:
            n += 1
            orders.append((f"o{c}-{n}", f"c{c}", at.isoformat(), round(float(rng.gamma(4, 10)), 2)))
            stop = 0.08
            if rng.random() < 0.15:
                topic = str(rng.choice(list(COMPLAINTS)))
                said = at + dt.timedelta(days=float(rng.uniform(0.5, 3)))
                if said < end:
                    text = str(rng.choice(COMPLAINTS[topic]))
                    feedback.append((f"f{c}-{n}", f"c{c}", said.isoformat(), text))
                    if topic == "delivery":
                        stop = 0.16
            if rng.random() < stop:
                break
            at += dt.timedelta(days=float(rng.exponential(20)))
    pd.DataFrame(orders, columns=["order_id", "customer_id", "ordered_at", "net_revenue"]).to_csv(
        folder / "orders.csv", index=False
    )
    pd.DataFrame(feedback, columns=["feedback_id", "customer_id", "submitted_at", "text"]).to_csv(
        folder / "feedback.csv", index=False
    )
    db = folder / "sim.duckdb"
    with Store(db) as store:
        ingest(store, folder / "orders.csv", as_of="2025-06-30")
        ingest(store, folder / "feedback.csv", as_of="2025-06-30")
    return db


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from retain.scoring import fit_store, score_store

    db = simulated_store(tmp_path_factory.mktemp("sim"))
    with Store(db) as store:
        fit_store(store, model="pnbd")
        score_store(store)
    return db


def test_pain_points_rank_the_topic_that_costs_customers(sim: Path) -> None:
    with Store(sim, read_only=True) as store:
        result = pain_points(store, window_days=120)
    topics = {r["topic"]: r for r in result["topics"]}
    assert result["topics"][0]["topic"] == "delivery"
    delivery = topics["delivery"]
    # the store's truth: 16% against 8% stop after an order, plus the few who are merely
    # slow (no order in 120 days at one every 20: e^-6 of those who stay)
    stay = np.exp(-120 / 20)
    truth = (0.16 + 0.84 * stay) / (0.08 + 0.92 * stay)
    assert delivery["churn_ratio_low"] <= truth <= delivery["churn_ratio_high"]
    assert delivery["churn_ratio_low"] > 1.3
    for other in ("price", "service"):  # no effect: near 1, and well below delivery's
        assert 0.6 < topics[other]["churn_ratio"] < 1.5
        assert topics[other]["churn_ratio_high"] < delivery["churn_ratio"]
        assert topics[other]["value_at_risk"] < 0.5 * delivery["value_at_risk"]
    assert 0 < delivery["value_at_risk"] <= delivery["clv_of_raisers"]
    assert (
        delivery["value_at_risk_low"] <= delivery["value_at_risk"] <= delivery["value_at_risk_high"]
    )
    assert delivery["customers"] <= delivery["mentions"]

    with Store(sim, read_only=True) as store:
        drill = pain_point(store, "delivery", limit=5)
        frame = tags_frame(store)
    assert len(drill["texts"]) == 5 and all("delivery" in t["topics"] for t in drill["texts"])
    raisers = set(frame[frame["topics"].map(lambda t: "delivery" in t)]["customer_id"])
    assert {c["customer_id"] for c in drill["customers"]} <= raisers


def test_pain_points_cli(sim: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["feedback", "pain-points", "--db", str(sim), "--window-days", "120"])
    assert out.exit_code == 0, out.output
    first = [
        line
        for line in out.output.splitlines()
        if line.startswith(("delivery", "price", "service"))
    ]
    assert first[0].startswith("delivery")
    out = runner.invoke(app, ["feedback", "pain-points", "--db", str(sim), "--topic", "nope"])
    assert out.exit_code != 0 and "no topic 'nope'" in out.output


# -- the CLI and the store ------------------------------------------------------------------


def test_tag_a_file_sets_bad_rows_aside(tmp_path: Path) -> None:
    path = tmp_path / "fb.jsonl"
    rows = [
        {
            "feedback_id": "a",
            "customer_id": "c1",
            "submitted_at": "2025-01-01",
            "text": "parcel arrived late and broken",
        },
        {
            "feedback_id": "b",
            "customer_id": "c2",
            "submitted_at": "2025-01-02",
            "text": "ok",
            "rating": 9,
        },
        {"feedback_id": "a", "customer_id": "c3", "submitted_at": "2025-01-03", "text": "again"},
        {
            "feedback_id": "c",
            "customer_id": "c4",
            "submitted_at": "2025-01-03",
            "text": "Доставка задержалась на неделю",
            "rating": 2,
        },
        {"customer_id": "c5", "text": "no id"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    out = CliRunner().invoke(
        app, ["feedback", "tag", str(path), "--json", "--db", str(tmp_path / "none.duckdb")]
    )
    assert out.exit_code == 0, out.output
    text = out.stdout
    tagged = json.loads(text[text.index("[") :])
    assert [t["feedback_id"] for t in tagged] == ["a", "c"]
    assert tagged[0]["language"] == "en" and set(tagged[0]["topics"]) == {"delivery", "damaged"}
    assert tagged[1]["language"] == "ru" and tagged[1]["topics"] == ["delivery"]
    assert tagged[1]["sentiment"] == "negative" and tagged[1]["sentiment_from"] == "rating"
    errors = out.stderr
    assert "row 2, column rating" in errors and "expected a number from 1 to 5" in errors
    assert "row 3, column feedback_id" in errors and "first at row 1" in errors
    assert "row 5, column feedback_id" in errors

    (tmp_path / "bad.csv").write_text("id,body\n1,hello\n", "utf-8")
    out = CliRunner().invoke(app, ["feedback", "tag", str(tmp_path / "bad.csv")])
    assert out.exit_code != 0 and "no feedback_id or text column" in out.output


def test_ingest_tags_and_a_new_taxonomy_retags(tmp_path: Path) -> None:
    (tmp_path / "fb.csv").write_text(
        "feedback_id,customer_id,submitted_at,text,rating\n"
        "f1,c1,2025-01-05,the gift wrap was torn,\n"
        "f2,c2,2025-01-06,Giao hàng chậm quá,2\n",
        "utf-8",
    )
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        ingest(store, tmp_path / "fb.csv", as_of="2025-06-30")
        frame = tags_frame(store).set_index("feedback_id")
        assert frame.attrs["stale"] == 0
        assert frame.loc["f2", "language"] == "vi" and frame.loc["f2", "topics"] == ["delivery"]
        assert frame.loc["f2", "sentiment"] == "negative"
        assert "gift_wrap" not in frame.loc["f1", "topics"]
        own = shipped_taxonomy().text + '\n[gift_wrap]\nname = "Gift wrap"\nen = ["gift wrap"]\n'
        assert retag(store, parse_taxonomy(own, "own.toml")) == 2
        frame = tags_frame(store).set_index("feedback_id")
    assert "gift_wrap" in frame.loc["f1", "topics"]
    out = CliRunner().invoke(app, ["feedback", "taxonomy", "--db", str(db)])
    assert out.exit_code == 0 and "[gift_wrap]" in out.output
