"""Errors raised by the store package."""

from __future__ import annotations


class StoreError(Exception):
    """Base: carries a stable machine code and a human detail."""

    code = "store_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidSchemaName(StoreError):
    code = "invalid_schema_name"
