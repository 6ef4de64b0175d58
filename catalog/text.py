"""Search terms for Chinese and English text, as the FTS5 index stores and queries them.

Chinese has no spaces, and most words are two characters (分数, 乐山), which a trigram
tokenizer cannot match. So text is turned into terms before it reaches SQLite: each run of
CJK characters becomes its overlapping bigrams (in order, so a longer word is a phrase of
them) plus, in a second column, its single characters; other text becomes lower-case words.
The title's terms have columns of their own (`title_*`), so a search can tell which lessons
hold the terms in their title. Queries are built from the same terms, every term quoted, so
FTS5 syntax in a query is searched for literally and never raises.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_CJK = (r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
        r"\u3040-\u30ff\uac00-\ud7af")
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")


@dataclass(frozen=True)
class Terms:
    bigrams: str  # space-separated, in text order
    unigrams: str
    words: str


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def index_terms(text: str) -> Terms:
    bigrams: list[str] = []
    unigrams: list[str] = []
    words: list[str] = []
    for match in _TOKEN.finditer(_normalize(text)):
        token = match.group()
        if _IS_CJK.match(token):
            unigrams.extend(token)
            bigrams.extend(token[i:i + 2] for i in range(len(token) - 1))
        else:
            words.append(token)
    return Terms(" ".join(bigrams), " ".join(unigrams), " ".join(words))


# The FTS5 table's columns, in order.
FTS_COLUMNS = ("title_bigrams", "title_unigrams", "title_words", "bigrams", "unigrams", "words")


def fts_values(title: str, rest: str) -> tuple[str, str, str, str, str, str]:
    """The FTS row of a lesson: the title's terms, then those of the rest of its text."""
    head, tail = index_terms(title), index_terms(rest)
    return (head.bigrams, head.unigrams, head.words, tail.bigrams, tail.unigrams, tail.words)


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def match_query(query: str, title_only: bool = False) -> str | None:
    """An FTS5 MATCH expression requiring every term of `query` anywhere in a lesson's text
    (or, with `title_only`, in its title); None if the query has no terms."""

    def columns(kind: str) -> str:
        return f"title_{kind}" if title_only else f"{{title_{kind} {kind}}}"

    parts: list[str] = []
    for match in _TOKEN.finditer(_normalize(query)):
        token = match.group()
        if _IS_CJK.match(token):
            if len(token) == 1:
                parts.append(f"{columns('unigrams')} : {_quote(token)}")
            else:
                phrase = " ".join(token[i:i + 2] for i in range(len(token) - 1))
                parts.append(f"{columns('bigrams')} : {_quote(phrase)}")
        else:
            parts.append(f"{columns('words')} : {_quote(token)} *")
    return " AND ".join(parts) if parts else None
