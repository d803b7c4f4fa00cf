"""The rules planner's vocabulary: column kinds, word forms, tokens and column mentions.

Everything here is pure and deterministic, so the same question over the same schema
always reads the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from runstream.contracts import Column

ColumnKind = Literal["number", "date", "text", "bool", "other"]
TokKind = Literal["word", "number", "quoted", "op", "col"]

GROUP_WORDS = frozenset({"by", "per", "each", "every", "across"})


class Unreadable(Exception):
    """Internal to the rules planner: why a question cannot be read (the message says)."""


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


_SINGULAR_KEEP = ("ss", "us", "is", "ics")


def singular(word: str) -> str:
    """A cheap, deterministic singular: enough to make 'products' meet 'product'."""
    w = word.lower()
    if len(w) <= 3 or w.endswith(_SINGULAR_KEEP):
        return w
    if w.endswith("ies"):
        return w[:-3] + "y"
    if w.endswith(("sses", "xes", "ches", "shes")):
        return w[:-2]
    if w.endswith("s"):
        return w[:-1]
    return w


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def name_words(name: str) -> tuple[str, ...]:
    """'UnitPrice', 'unit_price' and 'unit prices' all become ('unit', 'price')."""
    spaced = _CAMEL.sub(" ", name)
    return tuple(singular(p) for p in re.split(r"[^A-Za-z0-9]+", spaced) if p)


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
    def label(self) -> str:
        """How a user would type it: 'unit_price' -> 'unit price'."""
        return " ".join(p for p in re.split(r"[^A-Za-z0-9]+", self.name) if p) or self.name


def column_refs(columns: list[Column]) -> list[ColumnRef]:
    return [ColumnRef(c.name, c.type, column_kind(c.type), name_words(c.name)) for c in columns]


@dataclass(frozen=True)
class Tok:
    kind: TokKind
    norm: str  # lower-case, singular (words); the value (numbers, quoted); the operator
    raw: str  # as the user typed it
    col: ColumnRef | None = None
    parts: tuple[str, ...] = field(default=())

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.norm in words


_TOKEN = re.compile(
    r"""'(?P<sq>(?:[^']|'')*)'|"(?P<dq>[^"]*)"|“(?P<cq>[^”]*)”"""
    r"|(?P<num>-?\d{4}-\d{2}(?:-\d{2})?(?![\w-])|-?\d+(?:\.\d+)?(?![\w.]))"
    r"|(?P<op>>=|<=|!=|<>|==|=|>|<)"
    r"|(?P<word>[A-Za-z0-9_]+(?:'[A-Za-z]+)?)"
)


def tokenize(question: str) -> list[Tok]:
    toks: list[Tok] = []
    for m in _TOKEN.finditer(question):
        if m.group("sq") is not None:
            value = m.group("sq").replace("''", "'")
            toks.append(Tok("quoted", value, value))
        elif m.group("dq") is not None or m.group("cq") is not None:
            value = m.group("dq") if m.group("dq") is not None else m.group("cq")
            toks.append(Tok("quoted", value, value))
        elif m.group("num") is not None:
            toks.append(Tok("number", m.group("num"), m.group("num")))
        elif m.group("op") is not None:
            op = {"==": "=", "<>": "!="}.get(m.group("op"), m.group("op"))
            toks.append(Tok("op", op, m.group("op")))
        else:
            raw = m.group("word")
            parts = name_words(raw) or (raw.lower(),)
            norm = singular(raw.split("'")[0]) if "_" not in raw else "_".join(parts)
            toks.append(Tok("word", norm, raw, parts=parts))
    return toks


MAX_NAME_TOKENS = 4


def mark_columns(
    toks: list[Tok], columns: list[ColumnRef], reserved: frozenset[str] = frozenset()
) -> list[Tok]:
    """Replace the longest runs of words that spell a column name with one `col` token.

    A lone word that is the last word of exactly one column ('price' for unit_price)
    names that column too, unless it is one of the planner's own `reserved` words.
    """
    by_joined: dict[str, ColumnRef] = {}
    for ref in columns:
        by_joined.setdefault(ref.joined, ref)
        by_joined.setdefault(ref.name.lower(), ref)
    by_last: dict[str, list[ColumnRef]] = {}
    for ref in columns:
        if len(ref.words) > 1:
            by_last.setdefault(ref.words[-1], []).append(ref)
    out: list[Tok] = []
    i = 0
    while i < len(toks):
        found: tuple[int, ColumnRef] | None = None
        for j in range(min(len(toks), i + MAX_NAME_TOKENS), i, -1):
            span = toks[i:j]
            if any(t.kind != "word" for t in span):
                continue
            key = "".join(p for t in span for p in t.parts)
            if key in by_joined:
                found = (j, by_joined[key])
                break
        t = toks[i]
        if (
            found is None
            and t.kind == "word"
            and t.norm not in reserved
            and t.norm not in by_joined
        ):
            owners = by_last.get(t.norm, [])
            if len(owners) == 1:
                found = (i + 1, owners[0])
        if found is None:
            out.append(toks[i])
            i += 1
            continue
        j, ref = found
        raw = " ".join(t.raw for t in toks[i:j])
        out.append(Tok("col", ref.name, raw, col=ref))
        i = j
    return out


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
