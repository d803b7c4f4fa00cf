"""Why a question could not be planned, split by what the worker should do about it.

`retryable` is the one thing the event loop needs: a retryable error is nak'ed and
JetStream redelivers; anything else settles the analysis `failed` with `detail`.
"""

from __future__ import annotations


class PlannerError(Exception):
    """Base: a stable machine `code`, a human `detail`, and whether a retry may help."""

    code = "planner_error"
    retryable = False

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.detail


class UnanswerableQuestion(PlannerError):
    """The question cannot be turned into SQL over this table (permanent)."""

    code = "unanswerable_question"


class PlannerUnavailable(PlannerError):
    """The planner backend is down, slow or rate-limited (transient: retry later)."""

    code = "planner_unavailable"
    retryable = True


class PlannerResponseInvalid(PlannerError):
    """The planner backend answered, but not with a usable plan (permanent)."""

    code = "planner_response_invalid"


class PlannerRequestRejected(PlannerError):
    """The backend refused the request itself (bad key, unknown model: 4xx). Permanent."""

    code = "planner_request_rejected"
