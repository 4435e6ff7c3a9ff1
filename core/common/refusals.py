"""What a service refuses, beside bad input (core.common.validation.InvalidInput): the thing is
not there, the request conflicts with its state, or what the service calls cannot answer or
failed. The API maps each to its status once (api/errors.py); services never speak HTTP."""

from __future__ import annotations


class Refused(Exception):
    """A request a service will not carry out; the message says why, for the caller to read."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class NotFound(Refused):
    """What the request names does not exist (for this tenant)."""


class Conflict(Refused):
    """The request does not fit the current state (an archived campaign, a finished run)."""


class TooMany(Refused):
    """Too many such requests of this tenant at once; `retry_after` seconds says when to retry."""


class UpstreamFailed(Refused):
    """What the service called (a provider, a workflow) answered, with a failure."""


class Unavailable(Refused):
    """What the service needs (Temporal, a worker) cannot answer right now; retrying may work."""
