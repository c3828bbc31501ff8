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
    """The model provider, server or local model failed to answer.

    `status_code` is the HTTP status when there was one; `retryable` says whether the same request
    may succeed later; `retry_after` is the delay in seconds the server asked for; `role`,
    `model` and `attempts` say which call failed after how many tries. The `__cause__` is a
    masked copy of the SDK's exception (`myopto.backends.sdk_errors.ProviderError`: its `sdk_type`,
    `status_code` and masked message); the SDK's own exception is never chained, because
    providers quote API keys back. Subclasses name the kind of failure.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        role: str | None = None,
        model: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.role = role
        self.model = model
        self.attempts = attempts

    def __str__(self) -> str:
        where = ", ".join(
            part
            for part in (
                f"role {self.role}" if self.role else "",
                f"model {self.model}" if self.model else "",
                f"after {self.attempts} attempts" if self.attempts > 1 else "",
            )
            if part
        )
        return f"{super().__str__()} [{where}]" if where else super().__str__()


class RateLimited(BackendError):
    """HTTP 429: too many requests or tokens. Retried, honouring Retry-After."""


class ServerError(BackendError):
    """HTTP 5xx: the provider failed. Retried."""


class BackendTimeout(BackendError):
    """No answer within the timeout. Retried."""


class ConnectionFailed(BackendError):
    """The connection was refused or dropped before an answer. Retried."""


class MalformedResponse(BackendError):
    """The server answered with a body that is not a chat completion. Retried."""


class AuthenticationFailed(BackendError):
    """HTTP 401/403: the API key is missing, wrong, or not allowed. Never retried."""


class BadRequest(BackendError):
    """HTTP 400/404/422...: the provider rejected the request (unknown model, bad parameter). Never retried."""


class StructuredOutputError(MyoptoError):
    """The model's answer is not the JSON that was asked for. The answer is kept on `.response`."""

    def __init__(self, message: str, *, response: Any = None) -> None:
        super().__init__(message)
        self.response = response


class SchemaError(StructuredOutputError):
    """The answer did not parse or validate against the schema, re-asks included.

    `.response` is the last answer; `.problem` says what is wrong with it.
    """

    def __init__(self, message: str, *, response: Any = None, problem: str | None = None) -> None:
        super().__init__(message, response=response)
        self.problem = problem or message


class CacheMiss(MyoptoError):
    """Replay mode found no cached answer for a request; nothing was sent to the network.

    `key` is the request's cache key, so the missing call can be looked for in an export.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CacheUnavailable(MyoptoError):
    """The store that records answers (a Redis server, a cache directory) cannot be used.

    Raised before a request is sent when the store cannot be used (an answer that cannot be
    recorded would break replay, so nothing is sent). A store write that fails after a paid answer
    raises it too; the cache middleware then returns the answer and reports the failure
    (`myopto.recording.report_unrecorded`). `location` names the store (a Redis URL with its
    password masked, or a path).
    """

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class BudgetExceeded(MyoptoError):
    """A run's or a role's spending limit (`max_cost_usd`) is reached; the request was not sent.

    Never retried; cached answers are still served. `scope` is `"run <name>"` or `"role <name>"`,
    `spent` and `budget` are USD.
    """

    def __init__(self, message: str, *, scope: str, spent: float, budget: float) -> None:
        super().__init__(message)
        self.scope = scope
        self.spent = spent
        self.budget = budget


class DamagedCacheEntry(MyoptoError):
    """A stored cache record cannot be read back (not JSON, or not the shape myopto writes).

    `key` is the request's cache key and `location` the store. In modes that may call the model
    (`on`, `refresh`, `read_only`) the entry is reported and treated as a miss (and, where the
    mode writes, replaced by the new answer); `replay` raises it.
    """

    def __init__(self, message: str, *, key: str | None = None, location: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.location = location


class StreamClosed(MyoptoError):
    """The caller of a stream stopped reading it (`close()`, a `break`, a cancelled task).

    Raised inside the chain at the stream's next chunk, so the backend closes the provider's
    stream (the HTTP connection, or the local engine's sequence) at once; an answer whose stream
    was closed is never cached. `text` is what had been streamed."""

    def __init__(self, message: str = "the stream was closed by its caller", *, text: str = "") -> None:
        super().__init__(message)
        self.text = text


class StreamBroken(BackendError):
    """A stream failed after some of it had reached the caller, so it is not retried (the caller
    has seen part of an answer). `text` is the part that was streamed; `__cause__` the failure."""

    def __init__(self, message: str, *, text: str = "", **details: Any) -> None:
        super().__init__(message, **details)
        self.text = text


class DeploymentsUnavailable(BackendError):
    """No deployment of the role could answer: each one tried failed, or all are cooling down.

    The message names each deployment and what happened to it; `retry_after` is the seconds until
    the first one is back, when that is why; `__cause__` is the last failure."""


class DeploymentCoolingDown(BackendError):
    """A deployment is resting after failures: the call moves on to another (never retried there)."""
