"""`Limits`: rate limits and budgets, checked before each request is actually sent.

It sits between retry and the backend, so every attempt counts (retries too) and cached answers
never reach it. Per request:

1. budgets: the role's `max_cost_usd` and those of every `myopto.run(..., max_cost_usd=...)` the
   call is inside; spent >= budget raises `BudgetExceeded` (never retried, nothing sent);
2. rates: `rpm` / `tpm` per model, spread evenly (see `myopto.limiter`); the caller sleeps
   until its slot, and on while the model is paused after a 429 (checked again after a sleep,
   since a pause may have begun meanwhile);
3. the call; a 429 with Retry-After pauses every caller of that endpoint's model, here or, with
   a shared limiter, in the whole fleet, for at most `max_pause` seconds (`MYOPTO_MAX_PAUSE_SECONDS`,
   300 by default; a Retry-After that is no length of time, NaN or negative, pauses nothing);
4. the token estimate is corrected with the real usage, and the cost is added to each budget.

Where the state lives is the limiter's business: this process (`LocalLimiter`) or Redis
(`RedisLimiter`, when `MYOPTO_LIMITS_URL` or a Redis `MYOPTO_CACHE_URL` is set). A limiter that
fails before the request is sent fails the call (nothing was sent); once the model has answered,
the answer is the caller's whatever happens: a count that cannot be recorded (Redis gone) is
reported with `myopto.recording.report_unrecorded("limits", ...)`, and a pause that cannot be
recorded is logged while the 429 goes on to retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from myopto.errors import BudgetExceeded, ConfigError, RateLimited
from myopto.limiter import LOCAL, capped_wait, pause_cap
from myopto.parsing import content_text
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.pricing import cost_from_pricing
from myopto.recording import report_unrecorded
from myopto.request import Request
from myopto.response import Response

_log = logging.getLogger("myopto")


def estimate_tokens(request: Request) -> int:
    """Tokens a request may use, before it is sent: ~4 characters a token of prompt, plus the
    completion cap when one is given, once per choice asked for (`n`: each choice is a
    completion of its own); corrected with the real usage afterwards."""
    characters = sum(len(content_text(message.get("content"))) for message in request.messages)
    params = request.params
    cap = params.get("max_tokens") or params.get("max_completion_tokens") or params.get("max_new_tokens") or 0
    return characters // 4 + 1 + int(cap) * int(params.get("n") or 1)


class Limits(Middleware):
    """Rate limits (`rpm`, `tpm` per model) and budgets (`max_cost_usd`) for one role's calls.

    `max_pause` caps how long a provider's Retry-After pauses an endpoint's model (seconds;
    default `MYOPTO_MAX_PAUSE_SECONDS`, else 300).
    """

    name = "limits"

    def __init__(
        self,
        limiter: Any = None,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        max_cost_usd: float | None = None,
        role: str | None = None,
        pricing: Mapping[str, float] | None = None,
        price_known: Callable[[str], bool] | None = None,
        prepare: Callable[[], None] | None = None,
        max_pause: float | None = None,
    ) -> None:
        self.limiter = limiter or LOCAL
        self.max_pause = pause_cap(max_pause)
        self.rpm, self.tpm = rpm, tpm
        self.budgets = ((f"role:{role}", max_cost_usd),) if max_cost_usd is not None else ()
        self.pricing = pricing
        self.price_known = price_known or (lambda model: False)
        # with a rate limit, the backend's one-off setup (SDK import, client) happens before the
        # first slot is taken: a slot taken half a second before its request leaves would let
        # that request arrive together with the next second's burst
        self._prepare = prepare if (rpm or tpm) else None

    # -- before and after ------------------------------------------------------------------
    def _budgets(self, request: Request) -> tuple[tuple[str, float], ...]:
        runs = request.metadata.get("budgets")
        if not runs:
            return self.budgets
        if self.pricing is None and not self.price_known(request.model):
            raise ConfigError(
                f"run budget on model {request.model!r}, whose price is unknown: a budget that cannot be "
                f"measured is no budget. Give the role pricing={{'input': ..., 'output': ...}} (USD per "
                "million tokens)"
            )
        return (*self.budgets, *((f"run:{name}", limit) for name, limit in runs))

    def _check(self, budgets: tuple[tuple[str, float], ...]) -> None:
        for scope, budget in budgets:
            spent = self.limiter.spent(scope)
            if spent >= budget:
                kind, name = scope.split(":", 1)
                raise BudgetExceeded(
                    f"{kind} {name!r} has spent ${spent:.4f} of its ${budget:g} budget (max_cost_usd); "
                    "nothing was sent. Cached answers are still served",
                    scope=f"{kind} {name}",
                    spent=spent,
                    budget=budget,
                )

    def _settle(
        self, request: Request, response: Response, estimate: int, budgets: tuple[tuple[str, float], ...]
    ) -> None:
        """Count a paid answer's tokens and cost. Never raises: the answer is the caller's, and a
        count that cannot be made (the shared limiter's server gone) is reported instead."""
        try:
            if self.tpm:
                self.limiter.adjust(request.model, self.tpm, response.usage.total_tokens - estimate)
            if budgets:
                cost = _cost(response, self.pricing)
                for scope, _ in budgets:
                    self.limiter.spend(scope, cost)
        except Exception as error:  # noqa: BLE001 - whatever failed, the paid answer goes back
            report_unrecorded("limits", error, role=request.role, model=request.model)

    def _pause_on(self, request: Request, error: RateLimited) -> None:
        """Pause the endpoint's model for the 429's Retry-After, capped at `max_pause`. Never
        raises: the 429 itself goes on to retry, whether or not the pause could be recorded."""
        seconds = capped_wait(error.retry_after, self.max_pause)
        if not seconds:
            return
        try:
            self.limiter.pause(request.model, seconds, request.endpoint)
        except Exception as failure:  # noqa: BLE001 - the pause is a courtesy, the 429 is the outcome
            _log.warning(
                "a 429 asked to pause model %r for %.1f s, but the pause could not be recorded in %s: %s: %s",
                request.model,
                seconds,
                self.limiter.location,
                type(failure).__name__,
                failure,
            )

    # -- sync and async --------------------------------------------------------------------
    def _ready(self) -> None:
        if self._prepare is not None:
            self._prepare()
            self._prepare = None

    def __call__(self, request: Request, call_next: Handler) -> Response:
        self._ready()
        budgets = self._budgets(request)
        self._check(budgets)
        estimate = estimate_tokens(request) if self.tpm else 0
        wait = self.limiter.reserve(request.model, self.rpm, self.tpm, estimate, request.endpoint)
        while wait > 0:  # a pause that began while this caller slept holds it back too
            _held_back(request, wait)
            time.sleep(wait)
            wait = self.limiter.paused_for(request.model, request.endpoint)
        try:
            response = call_next(request)
        except RateLimited as error:
            self._pause_on(request, error)
            raise
        self._settle(request, response, estimate, budgets)
        return response

    async def _io(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a limiter step: off the event loop when it does network I/O, inline when it does not."""
        if self.limiter.blocking:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        if self._prepare is not None:
            await asyncio.to_thread(self._ready)
        budgets = self._budgets(request)
        await self._io(self._check, budgets)
        estimate = estimate_tokens(request) if self.tpm else 0
        wait = await self._io(self.limiter.reserve, request.model, self.rpm, self.tpm, estimate, request.endpoint)
        while wait > 0:
            _held_back(request, wait)
            await asyncio.sleep(wait)
            wait = await self._io(self.limiter.paused_for, request.model, request.endpoint)
        try:
            response = await call_next(request)
        except RateLimited as error:
            await self._io(self._pause_on, request, error)
            raise
        await self._io(self._settle, request, response, estimate, budgets)
        return response

    def describe(self) -> str:
        parts = [
            f"rpm {self.rpm:g}" if self.rpm else "",
            f"tpm {self.tpm:g}" if self.tpm else "",
            f"budget ${self.budgets[0][1]:g}" if self.budgets else "",
        ]
        shown = ", ".join(part for part in parts if part) or "run budgets and 429 pauses only"
        return f"{self.name} ({shown}; state in {self.limiter.location})"


def _cost(response: Response, pricing: Mapping[str, float] | None) -> float:
    """What a paid answer cost: from the role's `pricing` when it has one, else as the backend reported it."""
    if pricing is not None:
        usage = response.usage
        # cached prompt tokens at the role's cached_input price, as the provider bills them
        return cost_from_pricing(
            pricing,
            usage.prompt_tokens,
            usage.completion_tokens,
            cached_tokens=usage.prompt_tokens_details.cached_tokens,
        )
    return response.cost or 0.0


def _held_back(request: Request, wait: float) -> None:
    """A wait longer than the request's time left (retry clips it to the deadline) is not
    slept: the request fails as rate limited, unsent, and retry decides what comes next."""
    if request.timeout is not None and wait > request.timeout:
        raise RateLimited(
            f"model {request.model!r} is held back {wait:.2f} s by its rate limit or a provider's "
            f"Retry-After, longer than the {request.timeout:.2f} s left; nothing was sent",
            retryable=True,
            retry_after=wait,
            role=request.role,
            model=request.model,
        )
