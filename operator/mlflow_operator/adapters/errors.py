"""The one shape of every adapter's errors: a message, the service's own error code, and the condition
reason the reconciler reports (each subclass names its reason)."""

from __future__ import annotations


class DependencyError(Exception):
    """A call to an outside service failed; `reason` is the condition reason, `code` the service's code."""

    reason: str = "DependencyError"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
