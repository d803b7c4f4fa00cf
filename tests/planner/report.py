"""`make eval`: the planner evaluation's right / refused / wrong table, per family.

    .venv/bin/python -m tests.planner.report [-v]

`-v` also lists every question that was not answered right, with the reason. The exit
status is 1 when the bar is missed: any wrong answer, or under 90 % right on answerable
questions.
"""

from __future__ import annotations

import sys

from tests.planner.harness import evaluate, score, table

BAR = 0.9


def main(argv: list[str]) -> int:
    outcomes = evaluate()
    print(table(outcomes))
    misses = [o for o in outcomes if o.verdict != "right"]
    if "-v" in argv:
        for o in misses:
            print(f"\n[{o.verdict}] {o.case.dataset}/{o.case.family}: {o.case.ask}\n  {o.detail}")
            if o.sql and o.verdict == "wrong":
                print("  " + o.sql.replace("\n", "\n  "))
    s = score(outcomes)
    passed = s.wrong == 0 and s.rate >= BAR
    print(f"\nbar (0 wrong, ≥ {BAR:.0%} right on answerable): {'met' if passed else 'MISSED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
