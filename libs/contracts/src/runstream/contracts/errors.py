"""Errors raised by the contracts package."""

from __future__ import annotations


class ContractError(Exception):
    """Base: carries a stable machine code and a human detail."""

    code = "contract_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidId(ContractError):
    code = "invalid_id"

    def __init__(self, field: str, value: object) -> None:
        shown = repr(value)[:80]
        super().__init__(
            f"{field} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-' (got {shown})"
        )
        self.field = field


class InvalidSubject(ContractError):
    code = "invalid_subject"
