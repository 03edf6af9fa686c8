"""Errors of the service's storage and workflows (the API maps them to status codes)."""

from __future__ import annotations

from scripts_engine.errors import ScriptsEngineError


class NotFound(ScriptsEngineError, LookupError):
    """The campaign, call, customer, key or audio file does not exist."""


class Conflict(ScriptsEngineError):
    """The request conflicts with the current state (``code`` says how)."""

    def __init__(self, message: str, *, code: str = "conflict"):
        self.code = code
        super().__init__(message)


class Busy(ScriptsEngineError):
    """The database stayed locked or deadlocked through every retry; safe to retry later."""


class Forbidden(ScriptsEngineError, PermissionError):
    """The caller may not take this step (four eyes, their own template); ``code`` says why."""

    def __init__(self, message: str, *, code: str = "forbidden"):
        self.code = code
        super().__init__(message)
