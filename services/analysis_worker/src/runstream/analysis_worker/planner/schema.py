"""What the rules planner knows about one table, and how words of a question map onto it.

Words become columns (by name, plural, case, spaces or underscores, a unique part of a
name, or a synonym of a column that exists), entities (the noun one row stands for:
'orders' from order_date, 'employees' from employee_id or employees.csv, 'hires' from
hire_date, and always 'rows'/'records'), or values of a text column ('West', 'Gadget').
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runstream.analysis_worker.planner.lexicon import (
    ID_WORDS,
    ColumnRef,
    Tok,
    name_words,
    singular,
    stems,
)
from runstream.analysis_worker.planner.words import (
    FILLER,
    KEYWORDS,
    PEOPLE_NOUNS,
    PRIMARY_WORDS,
    ROW_NOUNS,
    SYNONYMS,
)

MAX_NAME_TOKENS = 4
DATE_SUFFIXES = frozenset({"date", "at", "time", "on", "day", "timestamp", "ts", "datetime"})


def norm_value(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


@dataclass
class Schema:
    cols: list[ColumnRef]
    values: dict[str, list[str]] = field(default_factory=dict)  # text column -> its values
    dataset_name: str = ""
    entities: dict[str, ColumnRef | None] = field(init=False)  # noun -> the date it stamps
    value_index: dict[str, list[tuple[ColumnRef, str]]] = field(init=False)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.entities = self._entities()
        self.value_index = {}
        for col in self.cols:
            for value in self.values.get(col.name, []):
                key = norm_value(value)
                if key and (col, value) not in self.value_index.get(key, []):
                    self.value_index.setdefault(key, []).append((col, value))

    # --- what the table is made of ----------------------------------------------------
    @property
    def date_cols(self) -> list[ColumnRef]:
        return [c for c in self.cols if c.kind == "date"]

    @property
    def year_col(self) -> ColumnRef | None:
        """A numeric column holding years ('year'), used when there is no date column."""
        return next((c for c in self.cols if c.words == ("year",) and c.kind == "number"), None)

    @property
    def measures(self) -> list[ColumnRef]:
        return [c for c in self.cols if c.is_measure and c.words != ("year",)]

    @property
    def primary(self) -> ColumnRef | None:
        """The main money column ('revenue', 'amount', ...), if there is exactly one."""
        found = [c for c in self.measures if set(c.words) & set(PRIMARY_WORDS)]
        return found[0] if len(found) == 1 else None

    def _entities(self) -> dict[str, ColumnRef | None]:
        names = {c.joined for c in self.cols}
        out: dict[str, ColumnRef | None] = {}
        for col in self.cols:
            if len(col.words) < 2:
                continue
            stem = col.words[-2]
            if col.words[-1] in ID_WORDS:
                out.setdefault(stem, None)
            elif col.kind == "date" and col.words[-1] in DATE_SUFFIXES:
                out[stem] = col
        base = re.sub(r"\.(csv|parquet|tsv|txt)$", "", self.dataset_name.lower())
        words = name_words(base)
        if len(words) == 1 and words[0] not in SYNONYMS:
            out.setdefault(words[0], None)
        if "employee" in out:
            for noun in PEOPLE_NOUNS:
                out.setdefault(noun, out["employee"])
        for noun in ROW_NOUNS:
            out.setdefault(noun, None)
        return {n: d for n, d in out.items() if n not in names and n not in FILLER}

    # --- reading a question ---------------------------------------------------------
    def mark(self, toks: list[Tok]) -> list[Tok]:
        """Words -> `col`, `entity` and `value` tokens; the rest stay as they are."""
        toks = self._mark_names(toks)
        return self._mark_values(toks)

    def _mark_names(self, toks: list[Tok]) -> list[Tok]:
        by_joined: dict[str, ColumnRef] = {}
        for ref in self.cols:
            by_joined.setdefault(ref.joined, ref)
            by_joined.setdefault(ref.name.lower(), ref)
        out: list[Tok] = []
        i = 0
        while i < len(toks):
            found = self._full_name(toks, i, by_joined)
            single = self._entity(toks[i]) or self._synonym(toks[i]) if found is None else None
            if single is not None:
                found = (single, i + 1)
            if found is None:
                found = self._part_of_name(toks, i)
            if found is None:
                out.append(toks[i])
                i += 1
                continue
            tok, j = found
            out.append(tok)
            i = j
        return out

    def _full_name(
        self, toks: list[Tok], i: int, by_joined: dict[str, ColumnRef]
    ) -> tuple[Tok, int] | None:
        for j in range(min(len(toks), i + MAX_NAME_TOKENS), i, -1):
            span = toks[i:j]
            if any(t.kind != "word" for t in span):
                continue
            head = "".join(p for t in span[:-1] for p in t.parts)
            last = span[-1]
            for form in (*stems(last.norm), "".join(last.parts)):
                ref = by_joined.get(head + form.replace("_", ""))
                if ref is not None:
                    raw = " ".join(t.raw for t in span)
                    return Tok("col", ref.name, raw, span[0].pos, col=ref), j
        return None

    def _entity(self, t: Tok) -> Tok | None:
        if t.kind != "word":
            return None
        for form in stems(t.norm):
            if form in self.entities:
                return Tok("entity", form, t.raw, t.pos)
        return None

    def _synonym(self, t: Tok) -> Tok | None:
        if t.kind != "word" or t.norm not in SYNONYMS:
            return None
        owners = [
            c for c in self.measures if any(w in c.words for w in SYNONYMS[t.norm])
        ]
        if len(owners) != 1:
            return None
        self.notes.append(f"'{t.raw}' read as the column {owners[0].name}")
        return Tok("col", owners[0].name, t.raw, t.pos, col=owners[0])

    def _part_of_name(self, toks: list[Tok], i: int) -> tuple[Tok, int] | None:
        """A run of words that starts or ends exactly one column's name ('price')."""
        for j in range(min(len(toks), i + MAX_NAME_TOKENS - 1), i, -1):
            span = toks[i:j]
            if any(t.kind != "word" or t.norm in KEYWORDS or t.norm in FILLER for t in span):
                continue
            words = tuple(p for t in span for p in t.parts)
            n = len(words)
            owners = [
                c for c in self.cols
                if len(c.words) > n and words in (c.words[:n], c.words[-n:])
            ]  # fmt: skip
            if len(owners) == 1:
                raw = " ".join(t.raw for t in span)
                return Tok("col", owners[0].name, raw, span[0].pos, col=owners[0]), j
        return None

    def _mark_values(self, toks: list[Tok]) -> list[Tok]:
        if not self.value_index:
            return toks
        out: list[Tok] = []
        i = 0
        while i < len(toks):
            found = self._value(toks, i)
            if found is None:
                out.append(toks[i])
                i += 1
                continue
            tok, j = found
            out.append(tok)
            i = j
        return out

    def _value(self, toks: list[Tok], i: int) -> tuple[Tok, int] | None:
        for j in range(min(len(toks), i + MAX_NAME_TOKENS), i, -1):
            span = toks[i:j]
            if any(t.kind not in ("word", "quoted") for t in span):
                continue
            if len(span) == 1 and span[0].kind == "word" and not _may_be_value(span[0]):
                continue
            text = " ".join(t.raw for t in span)
            key = norm_value(text)
            hits = self.value_index.get(key)
            if hits is None and span[-1].kind == "word":
                hits = self.value_index.get(norm_value(" ".join(
                    [*(t.raw for t in span[:-1]), singular(span[-1].raw)])))
            if not hits:
                continue
            col = hits[0][0] if len({c for c, _ in hits}) == 1 else None
            value = hits[0][1]
            return Tok("value", key, text, span[0].pos, col=col, value=value), j
        return None

    def holders(self, key: str) -> list[tuple[ColumnRef, str]]:
        return self.value_index.get(key, [])


def _may_be_value(t: Tok) -> bool:
    """Filler and planner words are values only when capitalised or quoted ('Other')."""
    if t.norm in FILLER:
        return False
    return t.norm not in KEYWORDS or t.raw[:1].isupper()


def sample_values(cols: list[ColumnRef], rows: list[list[Any]]) -> dict[str, list[str]]:
    """Text values seen in the sample rows: a fallback when no profile was taken."""
    out: dict[str, list[str]] = {}
    for i, c in enumerate(cols):
        if c.kind != "text" or c.is_id:
            continue
        seen = [r[i] for r in rows if i < len(r) and isinstance(r[i], str) and r[i].strip()]
        if seen:
            out[c.name] = list(dict.fromkeys(seen))
    return out
