"""Recurring themes the taxonomy does not cover, found in the texts themselves.

Each text's words (:func:`retain.feedback.language.pairs`) are taken without the words of
the taxonomy's phrases found in it, without the sentiment words, and without words
shorter than two letters; what is left is counted as words and as pairs of neighbouring
words, weighted by TF-IDF (sublinear counts; a term in fewer than :data:`MIN_TEXTS`
texts, or in more than :data:`MAX_SHARE` of them, is left out), and factorised by NMF
(non-negative matrix factorisation, scikit-learn's, seeded so that a rerun finds the same
themes). A text belongs to the theme that weighs most in it; a theme is shown when at
least :data:`MIN_SHARE` of the texts (and :data:`MIN_TEXTS`) belong to it, with its top
terms as written and its most typical texts. A theme can be promoted into the taxonomy
(:func:`promote`): its top terms become a topic's phrases in the languages its texts are in.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from retain.errors import DataError
from retain.feedback.language import detect, fold, pairs, words
from retain.feedback.tagging import Taxonomy, lexicon

THEMES = 8
MIN_TEXTS = 3
MIN_SHARE = 0.01
MAX_SHARE = 0.2
TOP_TERMS = 8
EXAMPLES = 3
MEMBER_WEIGHT = 0.4


@functools.cache
def stopwords() -> dict[str, frozenset[str]]:
    """The words discovery leaves out, per language, normalised."""
    import tomllib
    from importlib import resources

    from pythainlp.corpus import thai_stopwords
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    doc = tomllib.loads(
        resources.files("retain.feedback").joinpath("stopwords.toml").read_text("utf-8")
    )
    doc["en"] = [*doc["en"], *ENGLISH_STOP_WORDS]
    doc["th"] = list(thai_stopwords())
    out = {}
    for language, listed in doc.items():
        found = {w for word in listed for w in words(word, language)}
        out[language] = frozenset(found | {fold(w) for w in found})
    return out


def _leftover(text: str, language: str | None, taxonomy: Taxonomy) -> list[tuple[int, str, str]]:
    """The text's words the taxonomy, the sentiment lexicon and the stop words do not
    account for: (position, normalised, as written)."""
    found = pairs(text, language)
    tokens = [w for w, _ in found]
    lang = language or "en"
    folded = lang == "vi" and not any(fold(t) != t for t in tokens)
    view = [fold(t) for t in tokens] if folded else tokens
    taken: set[int] = set()
    matchers = [taxonomy.matcher(lang, folded), taxonomy.matcher("en")]
    matchers += [lexicon().phrases[(lang, folded)], lexicon().phrases[("en", False)]]
    for matcher in matchers:
        for start, end, _ in matcher.find(view):
            taken.update(range(start, end))
    common = lexicon().negators.get(lang, frozenset()) | stopwords().get(lang, frozenset())
    common |= stopwords()["en"]
    return [
        (i, view[i], found[i][1])
        for i in range(len(found))
        if i not in taken and len(view[i]) > 1 and not view[i].isdigit() and view[i] not in common
    ]


def discover(
    texts: Sequence[str],
    taxonomy: Taxonomy,
    *,
    themes: int = THEMES,
    languages: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """The recurring themes of ``texts`` outside ``taxonomy``, largest first: ``theme``
    (numbered from 1), ``terms`` (as written), ``texts`` (how many belong), ``share``,
    ``languages`` and ``examples`` (indices into ``texts`` and the texts)."""
    from scipy import sparse
    from sklearn.decomposition import NMF

    if themes < 1:
        raise DataError(f"--themes {themes}: expected at least 1")
    n = len(texts)
    if n < MIN_TEXTS * 2:
        return []
    languages = list(languages) if languages is not None else detect(list(texts))
    documents: list[list[str]] = []
    surface: dict[str, Counter[str]] = {}
    for text, language in zip(texts, languages, strict=True):
        left = _leftover(text or "", language, taxonomy)
        terms = [w for _, w, _ in left]
        for _, w, s in left:
            surface.setdefault(w, Counter())[s.lower()] += 1
        for (i, w, s), (j, w2, s2) in itertools.pairwise(left):
            if j == i + 1:  # neighbours in the text itself
                terms.append(f"{w} {w2}")
                surface.setdefault(f"{w} {w2}", Counter())[f"{s} {s2}".lower()] += 1
        documents.append(terms)
    df = Counter(t for doc in documents for t in set(doc))
    vocabulary = sorted(t for t, c in df.items() if c >= MIN_TEXTS and c <= MAX_SHARE * n)
    if not vocabulary:
        return []
    index = {t: j for j, t in enumerate(vocabulary)}
    rows, cols, values = [], [], []
    for i, doc in enumerate(documents):
        for term, count in Counter(t for t in doc if t in index).items():
            rows.append(i)
            cols.append(index[term])
            values.append(1.0 + np.log(count))
    idf = np.log((1 + n) / (1 + np.array([df[t] for t in vocabulary], float))) + 1.0
    matrix = sparse.csr_matrix((values, (rows, cols)), shape=(n, len(vocabulary)))
    matrix = matrix.multiply(idf).tocsr()
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    matrix = sparse.diags(1.0 / norms) @ matrix
    k = min(themes, len(vocabulary), n)
    model = NMF(n_components=k, init="nndsvda", random_state=0, max_iter=500)
    weights = model.fit_transform(matrix)
    components = model.components_
    best = weights.argmax(axis=1)
    strength = weights.max(axis=1)
    # a text belongs to its strongest theme when that theme weighs in it at least
    # MEMBER_WEIGHT of what it weighs in its most typical texts
    typical_weight = np.array(
        [np.quantile(weights[best == j, j], 0.9) if (best == j).any() else 0.0 for j in range(k)]
    )
    out: list[dict[str, Any]] = []
    for j in range(k):
        members = np.flatnonzero((best == j) & (strength > MEMBER_WEIGHT * typical_weight[j]))
        if len(members) < max(MIN_TEXTS, MIN_SHARE * n):
            continue
        top = np.argsort(-components[j])[:TOP_TERMS]
        terms = [surface[vocabulary[t]].most_common(1)[0][0] for t in top if components[j, t] > 0]
        typical = members[np.argsort(-weights[members, j])][:EXAMPLES]
        langs = Counter(languages[i] or "und" for i in members)
        out.append(
            {
                "terms": terms,
                "texts": len(members),
                "share": len(members) / n,
                "languages": dict(langs.most_common()),
                "examples": [{"index": int(i), "text": texts[i]} for i in typical],
                "members": [int(i) for i in members],
            }
        )
    out.sort(key=lambda t: (-int(t["texts"]), list(t["terms"])))
    for number, theme in enumerate(out, start=1):
        theme["theme"] = number
    return out


def discover_stored(store: Any, *, themes: int = THEMES) -> dict[str, Any]:
    """:func:`discover` over the store's feedback: every stored text, with the store's taxonomy."""
    from retain.feedback import store_taxonomy, tags_frame

    frame = tags_frame(store)
    frame = frame[frame["text"].fillna("").str.strip() != ""]
    taxonomy = store_taxonomy(store)
    found = discover(
        list(frame["text"]), taxonomy, themes=themes, languages=list(frame["language"])
    )
    ids = list(frame["feedback_id"])
    for theme in found:
        for example in theme["examples"]:
            example["feedback_id"] = ids[example.pop("index")]
        theme.pop("members")
    return {"texts": len(frame), "taxonomy": taxonomy.digest, "themes": found}


def promote(taxonomy: Taxonomy, theme: dict[str, Any], topic: str, name: str | None = None) -> str:
    """The taxonomy's TOML with ``theme``'s terms added to ``topic`` (a new topic when the
    taxonomy has none of that id) in each language its texts are in."""
    import re
    import tomllib

    if not re.fullmatch(r"[a-z][a-z0-9_]*", topic):
        raise DataError(
            f"--topic {topic!r}: expected a topic id of lower-case letters, digits and _"
        )
    doc = tomllib.loads(taxonomy.text)
    table = doc.setdefault(topic, {"name": name or topic.replace("_", " ").capitalize()})
    if name:
        table["name"] = name
    for language in theme["languages"]:
        if language == "und":
            continue
        terms = list(table.get(language, []))
        terms += [t for t in theme["terms"] if t not in terms]
        table[language] = terms
    return dump(doc)


def dump(doc: dict[str, Any]) -> str:
    """A taxonomy as TOML: a table per topic, its name and phrase lists."""
    import json

    lines = [
        "# retain feedback taxonomy: a table per topic, its name, and its phrases per language",
        "",
    ]
    for topic, table in doc.items():
        lines.append(f"[{topic}]")
        lines.append(f"name = {json.dumps(str(table.get('name', topic)), ensure_ascii=False)}")
        for language, terms in table.items():
            if language != "name":
                lines.append(f"{language} = {json.dumps(list(terms), ensure_ascii=False)}")
        lines.append("")
    return "\n".join(lines)


def theme_frame(found: list[dict[str, Any]]) -> pd.DataFrame:
    """Themes as a table (for the CLI)."""
    return pd.DataFrame(
        [
            {
                "theme": t["theme"],
                "texts": t["texts"],
                "share": t["share"],
                "terms": ", ".join(t["terms"]),
            }
            for t in found
        ]
    )
