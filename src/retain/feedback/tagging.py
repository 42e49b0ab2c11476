"""Tag feedback: its language, the pain points it speaks of, and its tone.

A topic is the aspect a text talks about, praised or blamed ("delivery was quick" is
``delivery``); the tone is the text's sentiment. Topics come from a taxonomy (the shipped
``taxonomy.toml``, or the store's own, see :func:`store_taxonomy`) whose phrases are found
in the text's words (:func:`retain.feedback.language.words`) in order, with up to
:data:`GAP` other words between two of a phrase's words.

The tone comes from a rating when there is one (stars or CSAT: 1-2 negative, 3 neutral,
4-5 positive; NPS: 0-6 negative, 7-8 neutral, 9-10 positive), else from the text: each
phrase of ``sentiment.toml`` found counts +1 or -1, its sign turned by a negator among the
:data:`NEGATION_REACH` words before it (a negator turns one phrase, the first after it);
above zero is positive, below negative, zero
neutral. A model of one's own can take the texts' place (``sentiment_model``: a function
from texts and their languages to ``negative``/``neutral``/``positive``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from retain.errors import DataError
from retain.feedback.language import LANGUAGES, detect, english_words, fold, words

GAP = 2
"""How many other words may stand between two words of a phrase."""
NEGATION_REACH = 3
"""How many words before a sentiment phrase a negator turns its sign from."""
SENTIMENTS = ("negative", "neutral", "positive")

SentimentModel = Callable[[Sequence[str], Sequence[str | None]], Sequence[str]]


class Phrases:
    """Phrases (lists of words) with a label each, found in a text's words."""

    def __init__(self, entries: Iterable[tuple[Sequence[str], Any]]) -> None:
        self.first: dict[str, list[tuple[tuple[str, ...], Any]]] = {}
        for phrase, label in entries:
            key = tuple(phrase)
            if key:
                self.first.setdefault(key[0], []).append((key, label))
        for found in self.first.values():
            found.sort(key=lambda item: -len(item[0]))  # the longest phrase first

    def longest(self, tokens: Sequence[str]) -> list[tuple[int, int, Any]]:
        """:func:`longest` of this one's matches."""
        return longest(self.find(tokens))

    def find(self, tokens: Sequence[str]) -> list[tuple[int, int, Any]]:
        """Every match as (first word, one past the last word, label), longest first at
        each position; a phrase's words in order with up to :data:`GAP` words between."""
        out = []
        for i, token in enumerate(tokens):
            for phrase, label in self.first.get(token, ()):
                end = _match(tokens, i, phrase)
                if end is not None:
                    out.append((i, end, label))
        return out


def longest(matches: Iterable[tuple[int, int, Any]]) -> list[tuple[int, int, Any]]:
    """The matches that no longer match overlaps, in order: "free delivery" is shipping
    cost, not delivery too."""
    taken: set[int] = set()
    out = []
    for start, end, label in sorted(matches, key=lambda m: (m[0] - m[1], m[0])):
        span = set(range(start, end))
        if not span & taken:
            taken |= span
            out.append((start, end, label))
    return sorted(out, key=lambda m: m[0])


def _match(tokens: Sequence[str], start: int, phrase: tuple[str, ...]) -> int | None:
    at = start
    for word in phrase[1:]:
        for step in range(1, GAP + 2):
            if at + step < len(tokens) and tokens[at + step] == word:
                at += step
                break
        else:
            return None
    return at + 1


@dataclass(frozen=True)
class Topic:
    id: str
    name: str
    terms: Mapping[str, tuple[str, ...]]


@dataclass
class Taxonomy:
    """Topics and their phrases per language; ``digest`` names this version of it."""

    topics: dict[str, Topic]
    text: str
    source: str
    digest: str = ""
    _matchers: dict[str, Phrases] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def matcher(self, language: str, folded: bool = False) -> Phrases:
        key = f"{language}{'~' if folded else ''}"
        if key not in self._matchers:
            entries = []
            for topic in self.topics.values():
                for term in topic.terms.get(language, ()):
                    tokens = words(term, language)
                    entries.append(([fold(t) for t in tokens] if folded else tokens, topic.id))
            self._matchers[key] = Phrases(entries)
        return self._matchers[key]


def parse_taxonomy(text: str, source: str) -> Taxonomy:
    """A taxonomy from its TOML ``text`` (``source`` names it in errors): a table per
    topic with ``name`` and a list of phrases per language."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{source}: not a taxonomy file ({exc})") from None
    topics = {}
    for topic_id, table in doc.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", topic_id):
            raise DataError(
                f"{source}: topic id {topic_id!r}: expected letters, digits, _ or - (it names "
                "the topic in files, commands and links)"
            )
        if not isinstance(table, dict):
            raise DataError(
                f"{source}: {topic_id!r} should be a table ([{topic_id}]) with a name and "
                "phrases per language"
            )
        unknown = sorted(set(table) - {"name", *LANGUAGES})
        if unknown:
            raise DataError(
                f"{source}: [{topic_id}] has {', '.join(unknown)}: expected name and "
                f"phrase lists for {', '.join(LANGUAGES)}"
            )
        terms = {}
        for language in LANGUAGES:
            phrases = table.get(language, [])
            if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
                raise DataError(f"{source}: [{topic_id}] {language} should be a list of phrases")
            terms[language] = tuple(p for p in phrases if p.strip())
        topics[topic_id] = Topic(topic_id, str(table.get("name", topic_id)), terms)
    if not topics:
        raise DataError(f"{source}: no topic in it")
    return Taxonomy(topics, text, source)


def shipped_taxonomy() -> Taxonomy:
    """The taxonomy that comes with retain: twelve common pain points in five languages."""
    text = resources.files("retain.feedback").joinpath("taxonomy.toml").read_text("utf-8")
    return parse_taxonomy(text, "retain's taxonomy")


def store_taxonomy(store: Any) -> Taxonomy:
    """The store's taxonomy (set by ``retain feedback retag --taxonomy``), else the shipped one."""
    if store.has_table("feedback_taxonomy"):
        row = store.con.execute(
            "SELECT taxonomy, source FROM feedback_taxonomy ORDER BY set_at DESC LIMIT 1"
        ).fetchone()
        if row:
            return parse_taxonomy(str(row[0]), f"the store's taxonomy (from {row[1]})")
    return shipped_taxonomy()


@dataclass
class Lexicon:
    """The sentiment phrases by (language, folded) and the negators by language."""

    phrases: dict[tuple[str, bool], Phrases]
    negators: dict[str, frozenset[str]]
    questions: dict[tuple[str, bool], Phrases]


@functools.cache
def lexicon() -> Lexicon:
    text = resources.files("retain.feedback").joinpath("sentiment.toml").read_text("utf-8")
    doc = tomllib.loads(text)
    phrases, negators, questions = {}, {}, {}
    for language in LANGUAGES:
        table = doc[language]
        asked = [words(p, language) for p in table.get("questions", [])]
        questions[(language, False)] = Phrases((p, True) for p in asked)
        questions[(language, True)] = Phrases(([fold(w) for w in p], True) for p in asked)
        entries = [(words(p, language), +1) for p in table["positive"]]
        entries += [(words(p, language), -1) for p in table["negative"]]
        phrases[(language, False)] = Phrases(entries)
        phrases[(language, True)] = Phrases(([fold(w) for w in p], s) for p, s in entries)
        # a negator that splits ("isn't": is + not, "ไม่ได้") negates by its first part
        split = [words(n, language) for n in table["negators"]]
        found = {w[0] for w in split if len(w) == 1} | {
            w[0] for w in split if len(w) > 1 and language != "en"
        }
        negators[language] = frozenset(found | {fold(w) for w in found} | {"not", "no", "never"})
    return Lexicon(phrases, negators, questions)


def rating_sentiment(
    nps: float | None = None, csat: float | None = None, stars: float | None = None
) -> str | None:
    """The tone a score says, or None without one (NPS first, then CSAT, then stars)."""
    if nps is not None:
        return "negative" if nps <= 6 else "neutral" if nps <= 8 else "positive"
    for score in (csat, stars):
        if score is not None:
            return "negative" if score < 3 else "neutral" if score < 4 else "positive"
    return None


def text_score(tokens: Sequence[str], language: str | None) -> int:
    """The lexicon's sum over a text's words (positive above zero): the phrases of its
    language and English ones (mixed in by many writers)."""
    return _tone(tokens, language)[0]


def _tone(tokens: Sequence[str], language: str | None) -> tuple[int, int]:
    """:func:`text_score` and how many phrases of tone made it."""
    lex = lexicon()
    hits = 0
    folded = language == "vi" and not _has_diacritics(tokens)
    view = [fold(t) for t in tokens] if folded else tokens
    total = 0
    for lang in dict.fromkeys([language if language in LANGUAGES else "en", "en"]):
        negators = lex.negators[str(lang)]
        used = -1  # a negator turns the first phrase after it only
        for start, end, sign in lex.phrases[(str(lang), folded and lang == "vi")].longest(view):
            before = [
                i
                for i in range(max(0, start - NEGATION_REACH, used + 1), start)
                if view[i] in negators
            ]
            if any(t in negators for t in view[start:end]):
                used = end - 1  # "no problems" holds its negator: it turns nothing after
                negated = False
            else:
                negated = bool(before)
                if negated:
                    used = before[-1]
            total += -sign if negated else sign
            hits += 1
    return total, hits


_URL = re.compile(r"\S+://\S+|www\.\S+")


def is_question(text: str, tokens: Sequence[str], language: str | None) -> bool:
    """Whether a text asks something: a question mark, or one of its language's question
    words (Thai marks a question with a word, not a sign)."""
    asked = _URL.sub(" ", text).replace("?!", "!").replace("!?", "!")
    if "?" in asked or "\u061f" in asked:
        return True
    lang = language if language in LANGUAGES else "en"
    folded = lang == "vi" and not _has_diacritics(tokens)
    view = [fold(t) for t in tokens] if folded else list(tokens)
    return bool(lexicon().questions[(str(lang), folded)].find(view))


@dataclass(frozen=True)
class Tags:
    language: str | None
    topics: tuple[str, ...]
    sentiment: str
    sentiment_from: str  # rating, text or model


def _has_diacritics(tokens: Sequence[str]) -> bool:
    return any(fold(t) != t for t in tokens)


def topics_of(
    tokens: Sequence[str], text: str, language: str | None, taxonomy: Taxonomy
) -> set[str]:
    """The topics whose phrases the text holds (where phrases overlap, the longer one)."""
    if language == "vi":
        folded = not _has_diacritics(tokens)
        view = [fold(t) for t in tokens] if folded else list(tokens)
        found = {label for *_, label in taxonomy.matcher("vi", folded).longest(view)}
        english = english_words(text)
        return found | {label for *_, label in taxonomy.matcher("en").longest(english)}
    matches = taxonomy.matcher("en").find(tokens)
    if language in LANGUAGES and language != "en":
        matches += taxonomy.matcher(str(language)).find(tokens)
    return {label for *_, label in longest(matches)}


def tag(
    texts: Sequence[str],
    *,
    nps: Sequence[float | None] | None = None,
    csat: Sequence[float | None] | None = None,
    stars: Sequence[float | None] | None = None,
    taxonomy: Taxonomy | None = None,
    sentiment_model: SentimentModel | None = None,
) -> list[Tags]:
    """Tag each text (scores, where given, decide the tone)."""
    taxonomy = taxonomy or shipped_taxonomy()
    n = len(texts)
    languages = detect([t or "" for t in texts])
    tokens = [words(t or "", lang) for t, lang in zip(texts, languages, strict=True)]
    ratings = [
        rating_sentiment(
            nps[i] if nps else None, csat[i] if csat else None, stars[i] if stars else None
        )
        for i in range(n)
    ]
    modelled: dict[int, str] = {}
    if sentiment_model is not None:
        ask = [i for i in range(n) if ratings[i] is None]
        answers = list(sentiment_model([texts[i] or "" for i in ask], [languages[i] for i in ask]))
        if len(answers) != len(ask):
            raise DataError(f"the sentiment model gave {len(answers)} answers for {len(ask)} texts")
        for i, answer in zip(ask, answers, strict=True):
            if answer not in SENTIMENTS:
                raise DataError(
                    f"the sentiment model said {answer!r}: expected one of {', '.join(SENTIMENTS)}"
                )
            modelled[i] = answer
    order = list(taxonomy.topics)
    out = []
    for i in range(n):
        found = topics_of(tokens[i], texts[i] or "", languages[i], taxonomy)
        if ratings[i] is not None:
            sentiment, source = ratings[i], "rating"
        elif i in modelled:
            sentiment, source = modelled[i], "model"
        else:
            score, hits = _tone(tokens[i], languages[i])
            if (
                not hits
                and found - {"delivery"}
                and not is_question(texts[i] or "", tokens[i], languages[i])
            ):
                # a pain point named without a word of tone is a complaint ("the box was
                # crushed"); not delivery alone, which is often told plainly ("it came today")
                score = -1
            sentiment = "positive" if score > 0 else "negative" if score < 0 else "neutral"
            source = "text"
        out.append(
            Tags(languages[i], tuple(t for t in order if t in found), str(sentiment), source)
        )
    return out


def load_model(spec: str) -> SentimentModel:
    """``module:function`` as a sentiment model (``--sentiment-model``)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise DataError(f"--sentiment-model {spec}: expected module:function")
    try:
        model = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"--sentiment-model {spec}: cannot load it ({exc})") from None
    if not callable(model):
        raise DataError(f"--sentiment-model {spec}: not a function")
    return model
