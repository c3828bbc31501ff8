"""`Retry`: retries transient failures with exponential backoff and jitter, within a deadline.

Transient means a `BackendError` with `retryable=True`: rate limits (429), 5xx, timeouts,
dropped or refused connections, malformed bodies. Authentication failures and bad requests
(400/401/403/404) fail at once, and so does anything raised before the backend (our own
`InvalidRequest`, `ConfigError`). A `Retry-After` / `retry-after-ms` from the server replaces
the computed wait, capped at `max_pause` (`MYOPTO_MAX_PAUSE_SECONDS`, 300 s by default: a year
or `inf` waits that long, then tries again); one that is no length of time (NaN, negative) is
ignored. Nothing sleeps past the deadline, and each attempt's timeout is clipped to the time
left. The SDKs' own retries are off (`max_retries=0` in both backends): this is the one retry
policy. Every bound is a finite number: there is always a deadline (300 s unless set).

Built on tenacity (a well-kept retry library with sync and async retriers sharing one policy).
Per call: `llm(..., retries=N, deadline=seconds)`.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import tenacity

from myopto.errors import BackendError, ConfigError, StreamBroken
from myopto.limiter import capped_wait, pause_cap
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Response
from myopto.tracing import span_event


def _seconds(option: str, value: Any, *, positive: bool = False, hint: str = "") -> float:
    """`value` as a finite number of seconds (> 0 when `positive`, else >= 0); `ConfigError` otherwise."""
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int past float's range
            number = math.inf
        if math.isfinite(number) and (number > 0 if positive else number >= 0):
            return number
    raise ConfigError(
        f"{option} must be a finite number of seconds {'> 0' if positive else '>= 0'}, got {value!r}{hint}"
    )


def _note_retry(state: tenacity.RetryCallState) -> None:
    """A failed attempt about to be retried: an event on the call's span, when it is traced."""
    error = state.outcome.exception() if state.outcome else None
    span_event(
        "myopto.retry",
        {
            "myopto.attempt": state.attempt_number,
            "error.type": type(error).__name__ if error is not None else None,
            "http.response.status_code": getattr(error, "status_code", None),
            "myopto.retry.wait_s": state.next_action.sleep if state.next_action else None,
        },
    )


class Retry(Middleware):
    """Retry transient backend failures: up to `retries` more attempts, within `deadline` seconds.

    The wait before attempt n+1 is `backoff * 2**(n-1)` capped at `max_wait`, times a random
    factor between 0.5 and 1 (jitter, so many clients do not retry in step), unless the server
    said how long to wait (then that, capped at `max_pause`). `ConfigError` for a bound that is
    not a finite number (`deadline` > 0; `backoff`, `max_wait` >= 0).
    """

    name = "retry"

    def __init__(
        self,
        *,
        retries: int = 4,
        deadline: float = 300.0,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        max_pause: float | None = None,
    ) -> None:
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigError(f"retries must be a whole number >= 0, got {retries!r}")
        self.retries = retries
        self.deadline = _seconds(
            "deadline",
            deadline,
            positive=True,
            hint=" (every call has one, 300 s unless set: give the longest a call may take)",
        )
        self.backoff = _seconds("retry_backoff", backoff)
        self.max_wait = _seconds("retry_max_wait", max_wait)
        self.max_pause = pause_cap(max_pause)
        self._retrier = self._build(retries, self.deadline, tenacity.Retrying)
        self._async_retrier = self._build(retries, self.deadline, tenacity.AsyncRetrying)

    def _build(self, retries: int, deadline: float, retrier: type) -> Any:
        """A tenacity retrier for these bounds. The deadline counts from `start_time`, the
        moment tenacity begins the call, so one retrier serves every call (and thread)."""

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            asked = capped_wait(getattr(error, "retry_after", None), self.max_pause)
            computed = min(self.max_wait, self.backoff * 2 ** min(state.attempt_number - 1, 64)) * random.uniform(
                0.5, 1.0
            )
            delay = asked if asked is not None else computed
            return max(0.0, min(delay, state.start_time + deadline - time.monotonic()))

        attempts_spent = tenacity.stop_after_attempt(retries + 1)

        def stop(state: tenacity.RetryCallState) -> bool:
            # also when the next wait would reach the deadline: no attempt starts after it
            return attempts_spent(state) or time.monotonic() + wait(state) >= state.start_time + deadline - 1e-3

        return retrier(
            stop=stop,
            wait=wait,
            before_sleep=_note_retry,
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, BackendError) and e.retryable),
            reraise=True,
        )

    def _policy(self, request: Request, asynchronous: bool) -> tuple[Any, float]:
        retries = request.metadata.get("retries", self.retries)
        deadline = request.metadata.get("deadline", self.deadline)
        if retries == self.retries and deadline == self.deadline:
            # tenacity keeps a call's state per thread: one sync retrier serves all threads, but
            # asyncio tasks share a thread, so each async call gets its own copy
            return (self._async_retrier.copy() if asynchronous else self._retrier), deadline
        return self._build(retries, deadline, tenacity.AsyncRetrying if asynchronous else tenacity.Retrying), deadline

    @staticmethod
    def _clipped(request: Request, end: float) -> Request:
        left = end - time.monotonic()
        if request.timeout is None or request.timeout > left:
            return request.replace(timeout=max(left, 0.001))
        return request

    def _first_failed(self, request: Request, error: BackendError) -> bool:
        """Whether a failed first attempt goes on to tenacity (retryable, and retries allowed).
        A stream that failed after its first chunk reached the caller is never retried: it is a
        `StreamBroken` carrying the text the caller saw."""
        sink = request.sink
        if sink is not None and sink.started:
            error.attempts = 1
            if isinstance(error, StreamBroken):
                return False
            text = "".join(sink.text_parts)
            raise StreamBroken(
                f"the stream failed after {sink.chunks} chunks: {error}",
                text=text,
                role=request.role,
                model=request.model,
            ) from error
        if error.retryable and request.metadata.get("retries", self.retries) > 0:
            return True
        error.attempts = 1
        return False

    # The first attempt runs without tenacity (its bookkeeping costs microseconds a call, and
    # most calls succeed); a retryable failure hands over to the tenacity loop, whose first
    # iteration replays that failure with the call's real start time, so waits, Retry-After,
    # the deadline and the retry events are exactly what they would have been.
    def __call__(self, request: Request, call_next: Handler) -> Response:
        start = time.monotonic()
        try:
            return call_next(self._clipped(request, start + request.metadata.get("deadline", self.deadline)))
        except BackendError as error:
            if not self._first_failed(request, error):
                raise
            first = error
        policy, deadline = self._policy(request, asynchronous=False)
        attempts = 0
        try:
            for attempt in policy:
                with attempt:
                    attempts += 1
                    if attempts == 1:
                        attempt.retry_state.start_time = start
                        raise first
                    end = attempt.retry_state.start_time + deadline
                    response = call_next(self._clipped(request, end))
                    return response.replace(attempts=attempts)
        except BackendError as error:
            error.attempts = attempts
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        start = time.monotonic()
        try:
            return await call_next(self._clipped(request, start + request.metadata.get("deadline", self.deadline)))
        except BackendError as error:
            if not self._first_failed(request, error):
                raise
            first = error
        policy, deadline = self._policy(request, asynchronous=True)
        attempts = 0
        try:
            async for attempt in policy:
                with attempt:
                    attempts += 1
                    if attempts == 1:
                        attempt.retry_state.start_time = start
                        raise first
                    end = attempt.retry_state.start_time + deadline
                    response = await call_next(self._clipped(request, end))
                    return response.replace(attempts=attempts)
        except BackendError as error:
            error.attempts = attempts
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self) -> str:
        return f"{self.name} (up to {self.retries} retries within {self.deadline:g} s, transient errors only)"
