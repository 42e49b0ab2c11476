"""What language a text is in, and its words as retain compares them.

Languages: English (``en``), Thai (``th``), Russian (``ru``), Vietnamese (``vi``) and Arabic
(``ar``). :func:`detect` asks lingua (its models ship in its wheel; nothing is downloaded)
to choose among these five, and falls back on the script when lingua cannot say.

:func:`words` cuts a text into runs of one script and normalises each run by its own
language, so a Thai review with "size" or a Russian one with "трек" and "ok" keeps every
word:

- Thai: word segmentation (pythainlp's dictionary-based ``newmm``), spaces dropped;
- Vietnamese: pyvi's segmentation, compounds split back into syllables, lower-cased (a
  text typed without diacritics, as many are, is compared with phrases folded the same
  way: ``giao hang`` finds ``giao hàng``);
- Russian: lower-cased, ``ё`` as ``е``, Snowball stems;
- Arabic: diacritics (harakat) and tatweel removed, alef forms (أ إ آ ٱ) as ا, ى as ي,
  ة as ه, ؤ as و, ئ as ي, Eastern Arabic digits as 0-9; the conjunction و and the article
  ال taken off a word's front; then Snowball's Arabic stems;
- English (and Latin words in any other text): lower-cased, "n't" read as "not", Snowball
  (Porter 2) stems.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

LANGUAGES = ("en", "th", "ru", "vi", "ar")
"""The languages retain reads, by ISO 639-1 code."""

_THAI = "\u0e00-\u0e7f"
_ARABIC = "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff"
_CYRILLIC = "\u0400-\u04ff"
_RUN = re.compile(
    rf"(?P<th>[{_THAI}]+)|(?P<ar>[{_ARABIC}]+(?:\s+[{_ARABIC}]+)*)"
    rf"|(?P<ru>[{_CYRILLIC}]+(?:[\s\-]+[{_CYRILLIC}]+)*)|(?P<latin>[^\W\d_]+(?:['’][^\W\d_]+)*|\d+|[$£€])"
)
_VI_LETTERS = set("ăâđêôơưàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ")
_AR_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_AR_FOLD = str.maketrans(
    {
        "أ": "ا",
        "إ": "ا",
        "آ": "ا",
        "ٱ": "ا",
        "ى": "ي",
        "ة": "ه",
        "ؤ": "و",
        "ئ": "ي",
        **{chr(0x0660 + d): str(d) for d in range(10)},
        **{chr(0x06F0 + d): str(d) for d in range(10)},
    }
)


@functools.cache
def _detector() -> Any:
    from lingua import Language, LanguageDetectorBuilder

    languages = [Language.ENGLISH, Language.THAI, Language.RUSSIAN, Language.VIETNAMESE]
    return LanguageDetectorBuilder.from_languages(*languages, Language.ARABIC).build()


_LINGUA = {"ENGLISH": "en", "THAI": "th", "RUSSIAN": "ru", "VIETNAMESE": "vi", "ARABIC": "ar"}


def by_script(text: str) -> str | None:
    """The language the text's letters say, or None when it has none: the script with the
    most letters (Thai, Arabic, Cyrillic), Latin letters as Vietnamese when any carries a
    Vietnamese-only diacritic, else English."""
    counts = {"th": 0, "ar": 0, "ru": 0, "latin": 0}
    vietnamese = False
    for match in _RUN.finditer(text):
        kind = match.lastgroup or "latin"
        piece = match.group()
        counts[kind] += len(piece)
        if kind == "latin" and not vietnamese:
            vietnamese = any(ch in _VI_LETTERS for ch in piece.lower())
    kind, count = max(counts.items(), key=lambda kv: kv[1])
    if count == 0:
        return None
    if kind == "latin":
        return "vi" if vietnamese else "en"
    return kind


def detect(texts: Sequence[str]) -> list[str | None]:
    """The language of each text (``en``, ``th``, ``ru``, ``vi``, ``ar``), or None when a
    text has no letters. A text mostly in one script is that script's language (Thai,
    Arabic, Russian); Latin texts, and texts that mix scripts evenly, are lingua's call."""
    out: list[str | None] = [None] * len(texts)
    ask: list[int] = []
    for i, text in enumerate(texts):
        guess = by_script(text or "")
        out[i] = guess
        if guess in ("en", "vi"):
            ask.append(i)
    if ask:
        found = _detector().detect_languages_in_parallel_of([texts[i] for i in ask])
        for i, language in zip(ask, found, strict=True):
            if language is not None:
                out[i] = _LINGUA.get(language.name, out[i])
    return out


@functools.cache
def _stemmer(language: str) -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer(language)


@functools.cache
def _stem(language: str, word: str) -> str:
    return str(_stemmer(language).stemWord(word))


def fold(word: str) -> str:
    """A Latin word without its diacritics (đ as d): how Vietnamese is often typed."""
    decomposed = unicodedata.normalize("NFD", word.replace("đ", "d").replace("Đ", "D"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _arabic(run: str) -> list[tuple[str, str]]:
    out = []
    for surface in run.split():
        word = _AR_DIACRITICS.sub("", surface).translate(_AR_FOLD)
        if len(word) > 4 and word.startswith("وال"):
            word = word[1:]
        if len(word) > 3 and word.startswith("ال"):
            word = word[2:]
        out.append((_stem("arabic", word), surface))
    return out


@functools.cache
def _thai_tokenizer() -> Any:
    from pythainlp.tokenize import word_tokenize

    return word_tokenize


def _thai(run: str) -> list[tuple[str, str]]:
    found = _thai_tokenizer()(run, engine="newmm", keep_whitespace=False)
    return [(w, w) for w in found if w.strip()]


@functools.cache
def _vi_tokenizer() -> Any:
    from pyvi import ViTokenizer

    return ViTokenizer.tokenize


def _latin(run: str, language: str | None) -> list[tuple[str, str]]:
    word = run.lower().replace("’", "'")
    if language == "vi":
        return [(word, run)]
    if word.endswith("n't"):
        stem = {"can't": "can", "won't": "will"}.get(word, word[:-3])
        return [(_stem("english", stem), run), ("not", run)]
    return [(_stem("english", word.replace("'", "")), run)]


def pairs(text: str, language: str | None) -> list[tuple[str, str]]:
    """Each of the text's words as (normalised, as written)."""
    if language == "vi":
        text = " ".join(_vi_tokenizer()(text).replace("_", " ").split())
    out: list[tuple[str, str]] = []
    for match in _RUN.finditer(text or ""):
        kind, run = match.lastgroup, match.group()
        if kind == "th":
            out.extend(_thai(run))
        elif kind == "ar":
            out.extend(_arabic(run))
        elif kind == "ru":
            for surface in re.split(r"[\s\-]+", run):
                out.append((_stem("russian", surface.lower().replace("ё", "е")), surface))
        else:
            out.extend(_latin(run, language))
    return out


def words(text: str, language: str | None) -> list[str]:
    """The text's words, normalised as the module says; Latin words are Vietnamese
    syllables in a Vietnamese text and English stems elsewhere."""
    return [w for w, _ in pairs(text, language)]


def english_words(text: str) -> list[str]:
    """A text's Latin words as English stems: how English phrases are found in a
    Vietnamese text that mixes them in."""
    return [
        w
        for m in _RUN.finditer(text or "")
        if m.lastgroup == "latin"
        for w, _ in _latin(m.group(), "en")
    ]
