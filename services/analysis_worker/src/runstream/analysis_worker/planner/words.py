"""The closed word lists of the rules planner.

A word of a question is either read by the plan (these lists name the words each part
of the plan reads), or a column, an entity or a value of the dataset, or `FILLER` —
or the question is refused naming it. `FILLER` therefore holds only words that cannot
change what is computed: articles, pronouns, prepositions, auxiliaries and request verbs.
"""

from __future__ import annotations

from runstream.analysis_worker.planner.spec import Agg, Grain

FILLER = frozenset({
    # articles, determiners, pronouns
    "a", "an", "the", "all", "any", "some", "both", "whole", "entire", "one", "ones", "that",
    "those", "these", "this", "there", "here", "it", "its", "they", "them", "their", "i",
    "me", "my", "we", "us", "our", "you", "your", "what", "which", "who", "whom", "whose",
    "how", "when", "where", "many", "much",
    # prepositions and conjunctions (what they introduce is read, or refused, on its own)
    "of", "in", "on", "at", "for", "from", "to", "by", "with", "within", "into", "about",
    "as", "than", "and", "or", "per", "each", "every", "across", "over", "among", "between",
    "so", "far", "up",
    # auxiliaries
    "is", "are", "was", "were", "be", "been", "being", "do", "doe", "did", "has", "have",
    "had", "having", "can", "could", "would", "should", "may", "might",
    # asking and showing
    "show", "list", "give", "tell", "find", "get", "got", "display", "compute", "calculate",
    "see", "know", "want", "need", "like", "please", "let", "plot",
    "chart", "graph", "visualize", "visualise", "draw", "look", "break", "broken", "down",
    "split", "grouped", "group", "breakdown", "distribution", "overview", "summary",
    "summarize", "summarise", "thank", "hi", "hello",
    # verbs that say how rows came about, never what is computed
    "sold", "sell", "selling", "made", "make", "generate", "generated", "bring", "brought",
    "come", "came", "work", "worked", "working", "use", "used", "using", "happen", "happened",
    "occur", "occurred", "place", "placed", "record", "recorded", "spent", "spend", "take",
    "took", "taken", "live", "lived", "belong", "located", "based", "go", "goe", "went",
    "contain", "paid", "pay", "exist",
    # the table itself, and emphasis
    "data", "dataset", "table", "file", "sheet", "overall", "altogether", "just", "only",
    "also", "exactly", "currently", "roughly", "approximately",
})  # fmt: skip

AGG_WORDS: dict[str, Agg] = {
    "total": "sum", "sum": "sum", "average": "avg", "avg": "avg", "mean": "avg",
    "median": "median", "minimum": "min", "min": "min", "maximum": "max", "max": "max",
    "stddev": "stddev", "std": "stddev",
}  # fmt: skip
# Superlatives that are a min/max of a column when nothing else ranks.
EXTREME_WORDS: dict[str, Agg] = {
    "highest": "max", "largest": "max", "biggest": "max", "greatest": "max",
    "lowest": "min", "smallest": "min",
}  # fmt: skip
RANK_DESC = frozenset({"highest", "largest", "biggest", "greatest", "most", "best", "busiest"})
RANK_ASC = frozenset({"lowest", "smallest", "least", "fewest", "worst"})
COUNT_RANK = frozenset({"most", "least", "fewest", "busiest"})  # rank by a count by default
POPULAR = frozenset({"common", "frequent", "popular"})
PRIMARY_RANK = frozenset({"best", "worst"})  # rank by the dataset's main money column
DATE_RANK = {"latest": True, "newest": True, "recent": True, "earliest": False}

GRAINS: dict[str, Grain] = {
    "day": "day", "daily": "day", "week": "week", "weekly": "week", "month": "month",
    "monthly": "month", "quarter": "quarter", "quarterly": "quarter", "year": "year",
    "yearly": "year", "annual": "year", "annually": "year", "hour": "hour", "hourly": "hour",
    "weekday": "weekday",
}  # fmt: skip
GRAIN_ADJECTIVES = frozenset({"daily", "weekly", "monthly", "quarterly", "yearly", "annual",
                              "annually", "hourly"})  # fmt: skip
TREND_WORDS = frozenset({"trend", "timeline", "evolution"})


CHANGE_WORDS = frozenset({
    "change", "changed", "growth", "grow", "grew", "increase", "increased", "rise", "rose",
    "decrease", "decreased", "decline", "declined", "drop", "dropped", "fall", "fell",
    "difference", "delta", "compare", "compared", "comparison", "vs", "versus", "yoy",
})  # fmt: skip
FALLING_WORDS = frozenset({"decrease", "decreased", "decline", "declined", "drop", "dropped",
                           "fall", "fell"})  # fmt: skip
SHARE_WORDS = frozenset({"percentage", "percent", "share", "proportion", "fraction", "pct"})
# Verbs that end the subject of "what percentage of <subject> <verb> <condition>".
RATIO_VERBS = frozenset({
    "is", "are", "was", "were", "come", "came", "work", "use", "have", "has", "had", "do",
    "doe", "did", "go", "goe", "went", "live", "belong", "get", "got", "pay", "paid", "fall",
})  # fmt: skip

ORDER_ASC = frozenset({"ascending", "asc", "increasing"})
ORDER_DESC = frozenset({"descending", "desc", "decreasing"})
ORDER_ALPHA = frozenset({"alphabetically", "alphabetical"})
ORDER_TIME = frozenset({"chronologically", "chronological"})
SORT_WORDS = frozenset({"sorted", "sort", "ordered", "ranked", "rank", "order"})

NEGATIONS = frozenset({"not", "non", "no", "excluding", "except", "without", "exclude"})

FORECAST = frozenset({"forecast", "forecasting", "predict", "predicted", "prediction",
                      "projection", "projected", "will", "future", "next", "expect",
                      "expected"})  # fmt: skip
CAUSAL = frozenset({"why", "cause", "caused", "causing", "because", "reason", "impact",
                    "effect", "affect", "affected", "influence", "driver", "drive", "drove",
                    "explain"})  # fmt: skip
RELATIVE = frozenset({"last", "this", "previous", "past", "current", "prior", "ytd", "today",
                      "yesterday", "ago"})  # fmt: skip

ROW_NOUNS = frozenset({"row", "record", "entry", "observation"})
PEOPLE_NOUNS = frozenset({"people", "person", "staff", "worker", "employee"})
# Column words that make a number an average rather than a sum ("price by region").
INTENSIVE = frozenset({
    "price", "rate", "ratio", "percent", "pct", "percentage", "score", "age", "avg", "mean",
    "temperature", "rating", "margin", "discount", "expectancy", "capita", "density", "index",
    "year", "speed", "duration", "level",
})  # fmt: skip
# Column words that mark the dataset's main money measure ("best month" ranks by it).
PRIMARY_WORDS = ("revenue", "sale", "sales", "amount", "turnover", "profit", "income", "fare")
# Words that may stand for a column named otherwise, only when that column exists.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sale": ("revenue", "amount", "turnover"),
    "revenue": ("sale", "sales", "amount", "turnover"),
    "amount": ("revenue", "sale", "sales"),
    "turnover": ("revenue", "sale", "sales"),
    "cost": ("price", "cost"),
    "price": ("cost",),
    "paid": ("salary", "wage", "pay"),
    "pay": ("salary", "wage"),
    "earning": ("salary", "wage", "pay"),
    "earn": ("salary", "wage", "pay"),
    "wage": ("salary", "pay"),
    "income": ("salary", "wage", "pay"),
    "compensation": ("salary", "wage", "pay"),
    "quantity": ("unit", "qty", "quantity"),
    "qty": ("unit", "quantity"),
}

KEYWORDS = (
    frozenset(AGG_WORDS) | frozenset(EXTREME_WORDS) | RANK_DESC | RANK_ASC | POPULAR
    | frozenset(DATE_RANK) | frozenset(GRAINS) | TREND_WORDS | CHANGE_WORDS | SHARE_WORDS
    | ORDER_ASC | ORDER_DESC | ORDER_ALPHA | ORDER_TIME | SORT_WORDS | NEGATIONS | FORECAST
    | CAUSAL | RELATIVE | {"count", "number", "distinct", "unique", "different", "top",
                          "bottom", "first", "time", "date", "percentile", "correlation",
                          "value", "oldest", "youngest", "true", "false", "yes",
                          "headcount", "half"}
)  # fmt: skip
