"""How a result is shaped: order words, shares, rankings and dimensions.

"sorted ascending", "as a share of the total", "top 5 products", "which region has the
highest revenue", "by region", "per month", "for each city and year".
"""

from __future__ import annotations

from runstream.analysis_worker.planner.filters import FilterReader
from runstream.analysis_worker.planner.lexicon import Tok, Unreadable
from runstream.analysis_worker.planner.reader import PendingDim, Rank, RankBy, int_of
from runstream.analysis_worker.planner.spec import (
    Grain,
    Measure,
    Order,
)
from runstream.analysis_worker.planner.words import (
    AGG_WORDS,
    COUNT_RANK,
    DATE_RANK,
    GRAIN_ADJECTIVES,
    GRAINS,
    ORDER_ALPHA,
    ORDER_ASC,
    ORDER_DESC,
    ORDER_TIME,
    POPULAR,
    PRIMARY_RANK,
    RANK_ASC,
    RANK_DESC,
    RATIO_VERBS,
    SHARE_WORDS,
    SORT_WORDS,
    TREND_WORDS,
)

_SUPERLATIVES = RANK_DESC | RANK_ASC | frozenset(DATE_RANK) | {"oldest", "youngest"}

_HIGH = frozenset({"highest", "largest", "biggest", "most", "high", "large", "big", "top"})
_LOW = frozenset({"lowest", "smallest", "least", "fewest", "low", "small", "bottom"})


class GroupReader(FilterReader):
    # --- order words: "sorted ascending", "lowest first", "alphabetically" ----------------
    def order_words(self) -> None:
        live = self.live()
        for k, t in enumerate(live):
            if t.kind != "word":
                continue
            nxt = live[k + 1] if k + 1 < len(live) else None
            taken = [t]
            if t.norm in ORDER_ASC:
                order = Order("measure", desc=False)
            elif t.norm in ORDER_DESC:
                order = Order("measure", desc=True)
            elif t.norm in ORDER_ALPHA:
                order = Order("label", desc=False)
            elif t.norm in ORDER_TIME:
                order = Order("time", desc=False)
            elif nxt is not None and nxt.is_word("first", "last"):
                flip = nxt.norm == "last"
                if t.norm in RANK_DESC | {"high", "large", "big"}:
                    order = Order("measure", desc=not flip)
                elif t.norm in RANK_ASC | {"low", "small"}:
                    order = Order("measure", desc=flip)
                elif t.norm in ("oldest", "earliest"):
                    order = Order("time", desc=flip)
                elif t.norm in ("newest", "latest", "recent"):
                    order = Order("time", desc=not flip)
                else:
                    continue
                taken.append(nxt)
                if k > 0 and live[k - 1].is_word("most"):
                    taken.append(live[k - 1])
            elif (span := _range_order(live, k)) is not None:
                order, n = span
                taken = live[k : k + n]
            elif t.is_word("a") and nxt is not None and nxt.is_word("z") and (
                k == 0 or not live[k - 1].is_word("z")
            ):
                order, taken = Order("label", desc=False), [t, nxt]
            elif t.is_word("z") and nxt is not None and nxt.is_word("a"):
                order, taken = Order("label", desc=True), [t, nxt]
            elif t.is_word("a") and self.words_at(live, k + 1, "to", "z"):
                order, taken = Order("label", desc=False), live[k : k + 3]
            elif t.is_word("z") and self.words_at(live, k + 1, "to", "a"):
                order, taken = Order("label", desc=True), live[k : k + 3]
            else:
                continue
            if self.order is not None and self.order != order:
                raise Unreadable(f"'{t.raw}' contradicts the order asked for before it")
            self.order = order
            self.use("order", *taken)
        for k, t in enumerate(self.live()):
            if t.kind == "word" and t.norm in SORT_WORDS and (
                self.order is not None or self.words_at(self.live(), k + 1, "by")
            ):
                self.use("order", t)
                if self.order is None:
                    self.order = Order("measure", desc=True)

    # --- shares: "share of revenue by region", "what percentage of employees are remote" ---
    def share_words(self) -> None:
        live = self.live()
        for k, t in enumerate(live):
            if t.kind != "word" or t.norm not in SHARE_WORDS:
                continue
            self.share_word = self.share_word or t
            self.use("share", t)
            if self.words_at(live, k + 1, "of"):
                verb = next(
                    (x for x in live[k + 2 :] if x.kind == "word" and x.norm in RATIO_VERBS),
                    None,
                )
                if verb is not None and self.ratio_split is None:
                    self.ratio_split = verb.pos
                counted = live[k + 2] if k + 2 < len(live) else None
                after = live[k + 3] if k + 3 < len(live) else None
                if counted is not None and counted.col is not None and (
                    counted.col.kind == "text" and not (after and after.kind == "entity")
                ):
                    self.add_measure(Measure("count_distinct", counted.col))
                    self.use("measure", counted)
                tail = live[k + 2 : k + 4]
                if tail and tail[0].is_word("the"):
                    tail = tail[1:]
                self.share_of_part = self.share_of_part or not (tail and tail[0].is_word("total"))
                if tail and tail[0].is_word("total") and (
                    len(tail) == 1 or tail[-1].kind not in ("col", "entity")
                    or tail[0] is tail[-1]
                ):
                    self.use("share", tail[0])
        live = self.live()
        for k, t in enumerate(live):
            if t.is_word("within") and self.share_word is not None:
                j = k + 1
                while j < len(live) and live[j].is_word("each", "every", "the"):
                    j += 1
                found = self._dim_item(live, j) if j < len(live) else None
                if found is not None and isinstance(found[0], PendingDim):
                    self.within = found[0]
                    self.dims.append(found[0])
                    self.use("dimension", *live[k : j + found[1]])
                    return

    # --- ranking: "top 5 products", "which region has the highest revenue" ---------------
    def ranking(self) -> None:
        live = self.live()
        for k, t in enumerate(live):
            if t.is_word("top", "bottom"):
                self._explicit_rank(live, k, desc=t.norm == "top", word=t)
                return
            if (
                int_of(t) is not None
                and k + 1 < len(live)
                and live[k + 1].kind == "word"
                and live[k + 1].norm in _SUPERLATIVES | {"most", "least"}
            ):
                self._explicit_rank(live, k - 1, desc=True, word=live[k + 1], bare=True)
                return
        for k, t in enumerate(live):
            if t.kind == "word" and t.norm in _SUPERLATIVES:
                if self._superlative(live, k):
                    return

    def _explicit_rank(
        self, live: list[Tok], k: int, *, desc: bool, word: Tok, bare: bool = False
    ) -> None:
        taken = [] if bare else [live[k]]
        i, n = k + 1, None
        if i < len(live) and (n := int_of(live[i])) is not None:
            taken.append(live[i])
            i += 1
        by: RankBy = "measure"
        if i < len(live) and live[i].kind == "word" and live[i].norm in _SUPERLATIVES | {
            "most", "least"
        }:
            desc, by, extra = self._sup_meaning(live, i)
            taken += live[i : i + 1 + extra]
            i += 1 + extra
        while i < len(live) and live[i].is_word("the", "of"):
            i += 1
        found = self._target(live, i)
        if found is None:
            shown = live[i].raw if i < len(live) else ""
            said = " ".join(x.raw for x in live[k if not bare else k + 1 : i])
            raise Unreadable(
                f"'{shown}' is not a column or a time period, so I could not tell what "
                f"'{said}' ranks" if shown else f"'{said}' needs something to rank"
            )
        rank, span = found
        if n is None:
            n = 1 if not live[i].raw.lower().endswith("s") else 10
        if n <= 0:
            raise Unreadable("the number of results to keep must be positive")
        rank.desc, rank.limit, rank.word = desc, n, word.raw
        if by != "measure":
            rank.by = by
        self.rank = rank
        taken += [x for x in live[i : i + span] if x.kind != "entity"]
        self.use("rank", *taken)

    def _sup_meaning(self, live: list[Tok], i: int) -> tuple[bool, RankBy, int]:
        """Direction, what ranks, and how many extra words a superlative at live[i] spans."""
        t = live[i]
        nxt = live[i + 1] if i + 1 < len(live) else None
        if t.norm in ("most", "least") and nxt is not None and nxt.kind == "word":
            if nxt.norm in POPULAR:
                return t.norm == "most", "count", 1
            if nxt.norm in DATE_RANK:
                return DATE_RANK[nxt.norm], "date", 1
        if t.norm in DATE_RANK:
            return DATE_RANK[t.norm], "date", 0
        if t.norm in ("oldest", "youngest"):
            if any(c.words == ("age",) for c in self.schema.cols):
                return t.norm == "oldest", "age", 0
            return t.norm == "youngest", "date", 0
        desc = t.norm in RANK_DESC
        if t.norm in COUNT_RANK:
            return desc, "count", 0
        if t.norm in PRIMARY_RANK:
            return desc, "primary", 0
        return desc, "measure", 0

    def _target(self, live: list[Tok], i: int) -> tuple[Rank, int] | None:
        """What a ranking ranks, at live[i]: groups of a column or grain, or rows."""
        if i >= len(live):
            return None
        t = live[i]
        grain = self._grain_at(live, i)
        if grain is not None:
            return Rank(True, 1, "dim", "", grain=grain[0]), grain[1]
        if t.kind == "entity" or t.is_word("who"):
            return Rank(True, 1, "rows", ""), 1
        if t.kind == "col" and t.col is not None:
            if t.col.is_measure and t.col.words != ("year",):
                # "top 5 salaries", "highest paid employees": rows ranked by that column,
                # which the measure pass reads as the ranking key.
                return Rank(True, 1, "rows", ""), 0
            grain_of_year: Grain | None = "year" if t.col.words == ("year",) else None
            return Rank(True, 1, "dim", "", col=t.col, grain=grain_of_year), 1
        return None

    def _superlative(self, live: list[Tok], s: int) -> bool:
        desc, by, extra = self._sup_meaning(live, s)
        sup = live[s]
        taken = live[s : s + 1 + extra]
        found: tuple[Rank, int] | None = None
        start = -1
        which = next(
            (k for k in range(s - 1, -1, -1) if live[k].is_word("which", "what", "who")), None
        )
        n = 1
        if which is not None:
            k = which + 1
            if k < len(live) and (m := int_of(live[k])) is not None:
                n, k = m, k + 1
            found = self._target(live, k if not live[which].is_word("who") else which)
            start = k
            if found is not None:
                taken.append(live[which])
                if n != 1:
                    taken.append(live[which + 1])
        if found is None:
            k = s - 1
            while k >= 0 and live[k].is_word("the"):
                k -= 1
            if k >= 1 and live[k].is_word("with", "having", "has", "had"):
                found, start = self._target(live, k - 1), k - 1
                if found is not None and k >= 2 and (m := int_of(live[k - 2])) is not None:
                    n = m  # "the 3 trips with the highest tip"
                    taken.append(live[k - 2])
        if found is None:
            k = s + 1 + extra
            while k < len(live) and live[k].is_word("the"):
                k += 1
            if k < len(live) and live[k].kind == "word" and live[k].norm in AGG_WORDS:
                k += 1
            col = live[k].col if k < len(live) and live[k].kind == "col" else None
            if col is not None and col.is_measure:
                if k + 1 < len(live) and live[k + 1].kind == "entity":
                    found, start = (Rank(True, 1, "rows", ""), 0), k + 1  # "highest paid employee"
            elif k < len(live):
                found, start = self._target(live, k), k
        if found is None:
            return False
        rank, span = found
        rank.desc, rank.limit, rank.word = desc, n, sup.raw
        if by != "measure":
            rank.by = by
        self.rank = rank
        taken += [x for x in live[start : start + span] if x.kind != "entity"]
        self.use("rank", *taken)
        return True

    # --- dimensions: "by region", "per month", "for each city and year" -----------------
    def dimensions(self) -> None:
        k = 0
        while k < len(live := self.live()):
            t = live[k]
            if t.kind == "word" and t.norm in GRAIN_ADJECTIVES:
                self.dims.append(PendingDim(t.pos, None, GRAINS[t.norm]))
                self.use("dimension", t)
                continue
            if t.kind == "word" and (t.norm in TREND_WORDS or (
                t.norm == "over" and self.words_at(live, k + 1, "time")
            )):  # fmt: skip
                taken = live[k : k + 2] if t.norm == "over" else [t]
                if not any(d.grain for d in self.dims):
                    # Without a date, a column of years is the only time axis there is.
                    grain: Grain = "year" if not self.schema.date_cols else "month"
                    said = " ".join(x.raw for x in taken)
                    if self.schema.date_cols or self.schema.year_col is not None:
                        self.dims.append(PendingDim(t.pos, None, grain))
                        self.notes.append(f"'{said}' read as per {grain}")
                    else:
                        raise Unreadable(f"'{said}' needs a date column, and the table has none")
                self.use("dimension", *taken)
                continue
            if t.is_word("by", "per", "across", "each", "every", "over") and k + 1 < len(live):
                j = k + 1
                while j < len(live) and live[j].is_word("each", "every", "the", "a"):
                    j += 1
                if self._dim_list(live, j, intro=t):
                    continue
            k += 1

    def _dim_list(self, live: list[Tok], j: int, *, intro: Tok) -> bool:
        taken: list[Tok] = []
        while j < len(live):
            found = self._dim_item(live, j, intro=intro)
            if found is None:
                break
            item, span = found
            if isinstance(item, PendingDim):
                if not any(d.col == item.col and d.grain == item.grain for d in self.dims):
                    self.dims.append(item)
            taken += live[j : j + span]
            j += span
            if j + 1 < len(live) and live[j].is_word("and", "then"):
                if self._dim_item(live, j + 1, intro=intro) is None:
                    break
                taken.append(live[j])
                j += 1
        if not taken:
            return False
        self.use("dimension", intro, *[x for x in taken if x.kind != "entity"])
        return True

    def _dim_item(
        self, live: list[Tok], j: int, intro: Tok | None = None
    ) -> tuple[PendingDim | str, int] | None:
        t = live[j]
        grain = self._grain_at(live, j)
        if grain is not None:
            g, span = grain
            col = None
            if self.words_at(live, j + span, "of"):
                k = j + span + 1 + (1 if self.words_at(live, j + span + 1, "the") else 0)
                if k < len(live) and live[k].kind == "col" and live[k].col is not None and (
                    live[k].col.kind == "date"  # type: ignore[union-attr]
                ):
                    col, span = live[k].col, k - j + 1
            return PendingDim(t.pos, col, g), span
        if t.kind == "entity" and intro is not None and intro.is_word("per", "each", "every"):
            self.per_row = True
            return "per_row", 1
        if t.kind != "col" or t.col is None:
            return None
        col = t.col
        if col.kind == "date":
            return PendingDim(t.pos, col, "day"), 1
        if col.words == ("year",) and col.kind == "number":
            return PendingDim(t.pos, col, "year"), 1
        if col.is_measure and not self._measure_is_dimension(t):
            return None
        return PendingDim(t.pos, col), 1

    def _measure_is_dimension(self, t: Tok) -> bool:
        """'by units' groups by units only when something else is being computed."""
        if self.rank is not None or (self.order is not None and self.order.key == "measure"):
            return False
        for x in self.live():
            if x is t:
                continue
            if x.kind == "col" and x.col is not None and x.col.is_measure:
                return True
            if x.kind == "entity" or (x.kind == "word" and x.norm in (
                *AGG_WORDS, "count", "number", "many"
            )):
                return True
        return self.share_word is not None

    def _grain_at(self, live: list[Tok], j: int) -> tuple[Grain, int] | None:
        """'month', 'day of the week', 'hour of day', 'month of the year' at live[j]."""
        t = live[j]
        if t.kind != "word" or t.norm not in GRAINS or t.norm in GRAIN_ADJECTIVES:
            return None
        for first, second, grain in (("day", "week", "weekday"), ("hour", "day", "hour"),
                                     ("month", "year", "month_of_year")):  # fmt: skip
            if t.norm == first:
                for words in (("of", second), ("of", "the", second)):
                    if self.words_at(live, j + 1, *words):
                        return grain, 1 + len(words)  # type: ignore[return-value]
        return GRAINS[t.norm], 1


def _range_order(live: list[Tok], k: int) -> tuple[Order, int] | None:
    """'from highest to lowest', 'low to high': an order written as a range."""
    i = k + (1 if live[k].is_word("from") else 0)
    if i + 2 >= len(live) or not live[i + 1].is_word("to"):
        return None
    a, b = live[i].norm, live[i + 2].norm
    if a in _HIGH and b in _LOW:
        return Order("measure", desc=True), i + 3 - k
    if a in _LOW and b in _HIGH:
        return Order("measure", desc=False), i + 3 - k
    return None

