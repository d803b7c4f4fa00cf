"""The rules planner's vocabulary: column kinds, word forms, tokens and SQL quoting.

Everything here is pure and deterministic, so the same question over the same schema
always reads the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from runstream.contracts import Column

ColumnKind = Literal["number", "date", "text", "bool", "other"]
TokKind = Literal["word", "number", "quoted", "op", "col", "value", "entity"]


class Unreadable(Exception):
    """Internal to the rules planner: why a question cannot be answered (the message says)."""


_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|INT\d*|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT"
    r"|UHUGEINT|FLOAT\d*|REAL|DOUBLE|DECIMAL|NUMERIC)\b"
)
_TEMPORAL = re.compile(r"^(DATE|TIMESTAMP|DATETIME)")


def column_kind(duckdb_type: str) -> ColumnKind:
    t = duckdb_type.strip().upper()
    if _NUMERIC.match(t):
        return "number"
    if _TEMPORAL.match(t):
        return "date"
    if t in ("VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "UUID", "ENUM") or t.startswith(
        ("VARCHAR", "ENUM")
    ):
        return "text"
    if t in ("BOOLEAN", "BOOL"):
        return "bool"
    return "other"


_SINGULAR_KEEP = ("ss", "us", "is", "ics", "ous")


def singular(word: str) -> str:
    """A cheap, deterministic singular: enough to make 'products' meet 'product'."""
    w = word.lower()
    if w == "ids":
        return "id"
    if len(w) <= 3 or w.endswith(_SINGULAR_KEEP):
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("sses", "xes", "ches", "shes")):
        return w[:-2]
    if w.endswith("s"):
        return w[:-1]
    return w


def stems(word: str) -> tuple[str, ...]:
    """Forms a word may take when it names a column: 'remotely' -> remote, 'hired' -> hire."""
    out = [word]
    if word.endswith("ly") and len(word) > 5:
        out.append(word[:-2])
    if word.endswith("ed") and len(word) > 3:
        out += [word[:-1], word[:-2]]
    return tuple(out)


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def name_words(name: str) -> tuple[str, ...]:
    """'UnitPrice', 'unit_price' and 'unit prices' all become ('unit', 'price')."""
    spaced = _CAMEL.sub(" ", name)
    return tuple(singular(p) for p in re.split(r"[^A-Za-z0-9]+", spaced) if p)


ID_WORDS = frozenset({"id", "uuid", "key", "code", "guid"})


@dataclass(frozen=True)
class ColumnRef:
    name: str
    type: str
    kind: ColumnKind
    words: tuple[str, ...]

    @property
    def joined(self) -> str:
        return "".join(self.words)

    @property
    def is_id(self) -> bool:
        """An identifier: counted or listed, never summed or averaged."""
        return bool(self.words) and self.words[-1] in ID_WORDS

    @property
    def is_measure(self) -> bool:
        return self.kind == "number" and not self.is_id

    @property
    def label(self) -> str:
        """How a user would type it: 'unit_price' -> 'unit price'."""
        return " ".join(p for p in re.split(r"[^A-Za-z0-9]+", self.name) if p) or self.name


def column_refs(columns: list[Column]) -> list[ColumnRef]:
    return [ColumnRef(c.name, c.type, column_kind(c.type), name_words(c.name)) for c in columns]


@dataclass(frozen=True)
class Tok:
    kind: TokKind
    norm: str  # lower-case singular (words); the value (numbers, quoted); the operator
    raw: str  # as the user typed it
    pos: int = 0  # index in the question's token list: where each part of a plan came from
    col: ColumnRef | None = None  # col: the column; value: the column holding the value
    value: str | None = None  # value: the stored value the words spell
    parts: tuple[str, ...] = ()

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.norm in words


_TOKEN = re.compile(
    r"""'(?P<sq>(?:[^']|'')*)'(?!\w)|"(?P<dq>[^"]*)"|“(?P<cq>[^”]*)”"""
    r"|(?P<num>-?\d{4}-\d{2}(?:-\d{2})?(?![\w-])"
    r"|-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,])"
    r"|-?\d+(?:\.\d+)?[kK]?(?!\w|\.\d))"
    r"|(?P<op>>=|<=|!=|<>|==|=|>|<|%)"
    r"|(?P<word>\w+(?:'\w+)?)"
)


def _number(text: str) -> str:
    text = text.replace(",", "")
    if text[-1] in "kK":
        value = float(text[:-1]) * 1000
        return str(int(value)) if value.is_integer() else str(value)
    return text


NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
# "one" is a number only where a count is expected ("more than one"), not in "which one".
_ONE_AFTER = frozenset({"than", "least", "most", "top", "bottom", "first", "with"})


def tokenize(question: str) -> list[Tok]:
    toks = _tokens(question)
    for i, t in enumerate(toks):
        if t.kind == "word" and t.norm in NUMBER_WORDS and (
            t.norm not in ("zero", "one") or (i > 0 and toks[i - 1].is_word(*_ONE_AFTER))
        ):
            toks[i] = Tok("number", str(NUMBER_WORDS[t.norm]), t.raw, t.pos)
    return toks


def _tokens(question: str) -> list[Tok]:
    toks: list[Tok] = []
    for m in _TOKEN.finditer(question):
        pos = len(toks)
        if m.group("sq") is not None:
            value = m.group("sq").replace("''", "'")
            toks.append(Tok("quoted", value, value, pos))
        elif m.group("dq") is not None or m.group("cq") is not None:
            value = m.group("dq") if m.group("dq") is not None else m.group("cq")
            toks.append(Tok("quoted", value, value, pos))
        elif m.group("num") is not None:
            toks.append(Tok("number", _number(m.group("num")), m.group("num"), pos))
        elif m.group("op") == "%":
            toks.append(Tok("word", "percent", "%", pos, parts=("percent",)))
        elif m.group("op") is not None:
            op = {"==": "=", "<>": "!="}.get(m.group("op"), m.group("op"))
            toks.append(Tok("op", op, m.group("op"), pos))
        else:
            raw = m.group("word")
            base = re.sub(r"'s$", "", raw, flags=re.IGNORECASE)
            parts = name_words(base) or (base.lower(),)
            norm = singular(base) if "_" not in base else "_".join(parts)
            toks.append(Tok("word", norm, raw, pos, parts=parts))
    return toks


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
