"""The exceptions myopto raises. Every one derives from `MyoptoError`.

Errors of the caller's making (bad config, bad messages, a malformed schema) derive from
`ValueError` too, and are raised before anything reaches the network.
"""

from __future__ import annotations

from typing import Any


class MyoptoError(Exception):
    """Base class of every error myopto raises."""


class ConfigError(MyoptoError, ValueError):
    """A role's configuration cannot work: unknown backend, no model, an option the backend does not take."""


class InvalidRequest(MyoptoError, ValueError):
    """A call's arguments are malformed: messages of the wrong shape, a bad schema, a bad parameter."""


class BackendUnavailable(ConfigError):
    """The backend cannot run here: its optional dependencies are missing or it is not implemented yet."""


class BackendError(MyoptoError):
    """The model provider or server failed to answer.

    `status_code` is the HTTP status when there was one; `retryable` says whether the same request
    may succeed later (rate limits, 5xx, timeouts, dropped connections); `retry_after` is the delay
    in seconds the server asked for, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after


class StructuredOutputError(MyoptoError):
    """The model's answer is not the JSON that was asked for. The answer is kept on `.response`."""

    def __init__(self, message: str, *, response: Any = None) -> None:
        super().__init__(message)
        self.response = response


class CacheMiss(MyoptoError):
    """Replay mode found no cached answer for a request; nothing was sent to the network.

    `key` is the request's cache key, so the missing call can be looked for in an export.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
