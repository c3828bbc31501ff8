"""`Deployments`: spreads a role's calls over its deployments, falls back, and cools down.

A role with several deployments (each a backend and model at one endpoint, with its own key,
weight, rate limits and retries) has this chain below its cache:

    Cache -> Deployments -> [Retry -> Cooldown -> Limits -> Backend] per deployment

so the cache key stays the role's request (which deployment answers is not part of it), and each
deployment keeps its own retries, rate limits and 429 pauses. Per call:

1. routing (`myopto.routing`) ranks the deployments that are not cooling down and the call goes
   to the first;
2. a deployment that still fails past its retries with a transient error (5xx, 429, timeouts,
   dropped or refused connections) hands the call to the next: its `fallbacks` when the role
   names them, else the others in routing order; a context-window error goes to a deployment
   with a larger context window (`context_window_fallbacks`); errors no other deployment can fix
   (authentication, bad request, budget, our own checks) are raised at once, and so is any
   failure of a stream that has begun (the caller has seen part of an answer);
3. each attempt's transient failure is counted (`Cooldown`, next to the deployment's limits):
   `allowed_fails` within a minute put the deployment to rest for `cooldown` seconds (a 429's
   Retry-After for that long), in this process or, with the role's limits URL, in the whole fleet
   (`myopto.cooldowns`); a resting deployment is not retried, and no call goes to it until it
   is back;
4. when every deployment left is resting, the call waits for the first back within its deadline
   (`when_all_cooling="wait"`) or fails at once (`"fail"`) with `DeploymentsUnavailable`, which
   also reports a call that every deployment failed.

The answer says which deployment gave it (`Response.deployment`, and the logs and spans).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from myopto.cooldowns import CooldownState
from myopto.errors import (
    BackendError,
    CacheMiss,
    ConfigError,
    DeploymentCoolingDown,
    DeploymentsUnavailable,
    InvalidRequest,
    RateLimited,
)
from myopto.limiter import capped_wait
from myopto.logs import redact
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Response
from myopto.routing import Deployment, Strategy, is_context_window_error, larger_context, plan
from myopto.tracing import span_event

_log = logging.getLogger("myopto")


def said(error: BaseException) -> str:
    """An error as one deployment's part of a message: its kind and its own words (without the
    role and model every part would repeat), and its attempts."""
    text = error.args[0] if isinstance(error, BackendError) and error.args else str(error)
    attempts = getattr(error, "attempts", 1)
    return f"{type(error).__name__}: {text}" + (f" ({attempts} attempts)" if attempts > 1 else "")


# -- per deployment ------------------------------------------------------------------------------


class Cooldown(Middleware):
    """Counts each attempt's transient failure against its deployment and rests the deployment
    after `allowed_fails` (a 429 with Retry-After: for that long); then fails the attempt with
    `DeploymentCoolingDown`, which retry does not retry, so the call moves on at once."""

    name = "cooldown"

    def __init__(
        self,
        state: CooldownState,
        key: str,
        deployment: str,
        *,
        allowed_fails: int,
        cooldown: float,
        max_pause: float,
    ) -> None:
        self.state, self.key, self.deployment = state, key, deployment
        self.allowed_fails, self.cooldown, self.max_pause = allowed_fails, cooldown, max_pause

    def _counted(self, request: Request, error: BackendError) -> BackendError:
        """The error the attempt ends with: `error`, or `DeploymentCoolingDown` when the deployment rests."""
        if not error.retryable or (isinstance(error, RateLimited) and error.status_code is None):
            return error  # not the deployment's failure (a refusal, or held back by our own rate limit)
        try:
            asked = capped_wait(error.retry_after, self.max_pause) if isinstance(error, RateLimited) else None
            if asked:
                self.state.rest(self.key, asked)
                left, began = asked, True
            else:
                left, began = self.state.failed(self.key, self.allowed_fails, self.cooldown)
        except Exception as failure:  # noqa: BLE001 - the attempt's own failure is the outcome
            _log.warning(
                "deployment %r of role %r failed, but its cooldowns in %s could not be updated: %s: %s",
                self.deployment,
                request.role,
                self.state.location,
                type(failure).__name__,
                failure,
            )
            return error
        if left <= 0:
            return error
        if began:
            _log.warning(
                redact(
                    f"deployment {self.deployment!r} of role {request.role!r} cools down for {left:.3g} s "
                    f"(state in {self.state.location}) after {said(error)}"
                )
            )
        resting = DeploymentCoolingDown(
            f"deployment {self.deployment!r} cools down for {left:.3g} s after {said(error)}",
            status_code=error.status_code,
            retry_after=left,
            role=request.role,
            model=request.model,
        )
        resting.__cause__ = error
        return resting

    def __call__(self, request: Request, call_next: Handler) -> Response:
        try:
            return call_next(request)
        except BackendError as error:
            counted = self._counted(request, error)
            if counted is error:
                raise
            raise counted from error

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        try:
            return await call_next(request)
        except BackendError as error:
            if self.state.blocking:
                counted = await asyncio.to_thread(self._counted, request, error)
            else:
                counted = self._counted(request, error)
            if counted is error:
                raise
            raise counted from error

    def describe(self) -> str:
        return f"{self.name} ({self.allowed_fails} failures a minute rest it {self.cooldown:g} s)"


class DeploymentLimiter:
    """A role's limiter as one deployment sees it: rates and 429 pauses of its own (the
    deployment's key joins the model's name in the limiter's keys), budgets shared with the role."""

    def __init__(self, limiter: Any, key: str) -> None:
        self.limiter = limiter
        self.suffix = f"#{key}"
        self.blocking = limiter.blocking
        self.location = limiter.location

    def reserve(
        self, model: str, rpm: float | None, tpm: float | None, tokens: int, endpoint: str | None = None
    ) -> float:
        wait: float = self.limiter.reserve(model + self.suffix, rpm, tpm, tokens, endpoint)
        return wait

    def adjust(self, model: str, tpm: float, tokens: int) -> None:
        self.limiter.adjust(model + self.suffix, tpm, tokens)

    def pause(self, model: str, seconds: float, endpoint: str | None = None) -> None:
        self.limiter.pause(model + self.suffix, seconds, endpoint)

    def paused_for(self, model: str, endpoint: str | None = None) -> float:
        paused: float = self.limiter.paused_for(model + self.suffix, endpoint)
        return paused

    def spent(self, scope: str) -> float:
        spent: float = self.limiter.spent(scope)
        return spent

    def spend(self, scope: str, usd: float) -> None:
        self.limiter.spend(scope, usd)


# -- the group ----------------------------------------------------------------------------------


class DeploymentGroup:
    """The terminal of a role with deployments: what the group is (its endpoint in the cache key,
    the capabilities all its backends share) and which deployments a request may go to. The
    `Deployments` middleware above it routes every call; nothing reaches this terminal itself."""

    kind = "deployments"
    supports_batching = False

    def __init__(self, role: str, model: str, deployments: Sequence[Deployment]) -> None:
        self.role, self.model = role, model
        self.deployments = tuple(deployments)
        backends = [deployment.pipeline.backend for deployment in self.deployments]
        self.supports_json_schema = all(getattr(b, "supports_json_schema", False) for b in backends)
        self.supports_json_object = all(getattr(b, "supports_json_object", False) for b in backends)
        self.supports_streaming = all(getattr(b, "supports_streaming", False) for b in backends)
        self.reports_cost = all(getattr(b, "reports_cost", False) for b in backends)
        self.wants_json_instruction = any(getattr(b, "wants_json_instruction", False) for b in backends)
        self._endpoints: dict[str, tuple[tuple[str | None, ...], str]] = {}
        self._keys = tuple(deployment.key for deployment in self.deployments)

    def keys(self, deployments: Sequence[Deployment]) -> Sequence[str]:
        """The shared-state keys of `deployments` (of all of them at no cost)."""
        return self._keys if deployments is self.deployments else [d.key for d in deployments]

    def eligible(self, model: str) -> Sequence[Deployment]:
        """The deployments a request for `model` may go to: all for the role's model, else those
        of that name or model; `InvalidRequest` when none is."""
        if model == self.model:
            return self.deployments
        chosen = [d for d in self.deployments if model in (d.name, d.model)]
        if not chosen:
            raise InvalidRequest(
                f"role {self.role!r} has no deployment named or serving {model!r}: model= picks deployments by "
                f"name {[d.name for d in self.deployments]} or model {sorted({d.model for d in self.deployments})}, "
                f"or leave it out for all ({self.model!r})"
            )
        return chosen

    def endpoint_for(self, model: str) -> str | None:
        """The group as the cache key names it: the deployments a request for `model` may go to,
        each as (backend, endpoint, model), sorted, so the order they are listed in does not matter.
        Each deployment's endpoint is asked for every request (it may follow the environment, as
        LiteLLM's provider defaults do); the text is made again only when one has changed."""
        try:
            deployments = self.eligible(model)
        except InvalidRequest:
            deployments = self.deployments  # refused by the middleware, before anything is sent
        endpoints = tuple([d.pipeline.backend.endpoint_for(d.model) for d in deployments])
        known = self._endpoints.get(model)
        if known is not None and known[0] == endpoints:
            return known[1]
        parts = sorted(
            {(d.backend, endpoint, d.model) for d, endpoint in zip(deployments, endpoints, strict=True)}, key=str
        )
        text = "deployments " + json.dumps([list(part) for part in parts], separators=(",", ":"))
        if len(self._endpoints) > 64:
            self._endpoints.clear()
        self._endpoints[model] = (endpoints, text)
        return text

    def provider_name(self, model: str) -> str:
        """The provider all deployments share (`gen_ai.provider.name`), else `myopto.deployments`."""
        names = set()
        for deployment in self.deployments:
            name = getattr(deployment.pipeline.backend, "provider_name", None)
            names.add(name(deployment.model) if callable(name) else "unknown")
        return names.pop() if len(names) == 1 else "myopto.deployments"

    def prepare(self) -> None:
        for deployment in self.deployments:
            deployment.pipeline.backend.prepare()

    def complete(self, request: Request) -> Response:
        raise ConfigError(
            f"role {self.role!r} has deployments, and its calls are routed by its 'deployments' middleware, "
            "which this chain no longer has; put it back, or clear_role_config to start over"
        )

    async def acomplete(self, request: Request) -> Response:
        return self.complete(request)

    def describe(self) -> str:
        lines = [f"{len(self.deployments)} deployments:"]
        for deployment in self.deployments:
            chain = " -> ".join([*deployment.pipeline.names, "backend"])
            inner = deployment.pipeline.backend
            backend = inner.describe() if callable(getattr(inner, "describe", None)) else inner.kind
            window = f", context {deployment.context_window} tokens" if deployment.context_window else ""
            lines.append(
                f"   {deployment.name}: {deployment.model}, weight {deployment.weight:g}{window}: {chain}: {backend}"
            )
        return "\n".join(lines)


# -- routing each call ------------------------------------------------------------------------


@dataclasses.dataclass
class _Call:
    """One call's way through the deployments."""

    request: Request
    eligible: Sequence[Deployment]
    end: float
    tried: list[Deployment] = dataclasses.field(default_factory=list)
    queue: list[Deployment] | None = None  # the order to go on in, once the first has failed
    failures: list[tuple[str, BaseException]] = dataclasses.field(default_factory=list)


class Deployments(Middleware):
    """Routes each call to one of the role's deployments, falls back, and waits out or reports
    cooldowns (see the module doc). `state` is the process's or the fleet's cooldowns
    (`myopto.cooldowns`); `deadline` bounds a whole call, fallbacks and waits included."""

    name = "deployments"

    def __init__(
        self,
        group: DeploymentGroup,
        *,
        strategy: Strategy,
        state: CooldownState,
        when_all_cooling: str = "wait",
        fallbacks: Any = None,
        context_window_fallbacks: Any = None,
        deadline: float = 300.0,
        cache_misses_move_on: bool = False,
    ) -> None:
        self.group = group
        self.strategy = strategy
        self.state = state
        self.when_all_cooling = when_all_cooling
        self.fallbacks = dict(fallbacks or {})
        self.context_window_fallbacks = dict(context_window_fallbacks or {})
        self.deadline = deadline
        self.cache_misses_move_on = cache_misses_move_on  # the cache is per deployment: replay looks in each
        self._turn = 0  # least-busy: where ties start, so equals take turns

    # -- choosing --------------------------------------------------------------------------
    def _next(self, call: _Call) -> tuple[Deployment, str | None] | float:
        """The deployment to try next (and its in-flight token), or the seconds to wait for one."""
        if call.tried:
            if time.monotonic() >= call.end:
                raise self._unavailable(call)
            if call.queue is None:  # the first failed: its fallbacks, else the rest in the strategy's order
                call.queue = plan(call.tried[0], self.strategy.order(call.eligible), self.fallbacks)
            candidates: Sequence[Deployment] = [d for d in call.queue if d not in call.tried]
            if not candidates:
                raise self._unavailable(call)
        else:
            candidates = call.eligible
        left = self.state.remaining(self.group.keys(candidates))
        available = [d for d, rest in zip(candidates, left, strict=True) if rest <= 0] if any(left) else candidates
        if not available:
            first_back = min(left)
            if self.when_all_cooling == "fail" or time.monotonic() + first_back > call.end:
                raise self._unavailable(call, candidates, left)
            return float(first_back)
        # a call still counted in flight past its deadline (and a minute) belongs to a process that died
        stale = self.deadline + 60
        if call.tried:  # falling back: the next in order
            chosen = available[0]
            return chosen, self.state.enter(chosen.key, stale) if self.strategy.shared_busy else None
        if self.strategy.shared_busy:
            self._turn += 1
            index, token = self.state.take_least_busy(self.group.keys(available), self._turn % len(available), stale)
            return available[index], token
        return self.strategy.choose(available), None

    # -- after a failure -------------------------------------------------------------------
    def _failed(self, call: _Call, deployment: Deployment, error: BaseException) -> None:
        """Note a deployment's failure and where the call goes next; raise what cannot move on."""
        call.tried.append(deployment)
        request = call.request
        if getattr(error, "deployment", None) is None:
            with contextlib.suppress(AttributeError):  # an exception type with slots
                error.deployment = deployment.name  # type: ignore[attr-defined]  # read by the log line and the span
        sink = request.sink
        if sink is not None and sink.started:
            raise error  # part of an answer reached the caller: no other deployment may finish it
        if isinstance(error, CacheMiss) and self.cache_misses_move_on:
            call.failures.append((deployment.name, error))
            return
        if is_context_window_error(error):
            larger = [
                d
                for d in larger_context(deployment, call.eligible, self.context_window_fallbacks)
                if d not in call.tried
            ]
            if not larger:
                raise error
            call.queue = larger
        elif not (isinstance(error, BackendError) and (error.retryable or isinstance(error, DeploymentCoolingDown))):
            raise error
        call.failures.append((deployment.name, error))
        span_event(
            "myopto.fallback",
            {
                "myopto.deployment": deployment.name,
                "error.type": type(error).__name__,
                "http.response.status_code": getattr(error, "status_code", None),
                "myopto.attempts": getattr(error, "attempts", None),
            },
        )
        _log.info(redact(f"role {request.role!r}: deployment {deployment.name!r} failed ({said(error)}); moving on"))

    def _unavailable(
        self, call: _Call, resting: Sequence[Deployment] = (), left: Sequence[float] = ()
    ) -> BaseException:
        """What a call ends with when no deployment is left to try."""
        misses = [error for _, error in call.failures if isinstance(error, CacheMiss)]
        if misses and len(misses) == len(call.failures) and not resting:
            return misses[0]  # replay, with the deployment in the key: no deployment had the answer
        parts = [f"{name}: {said(error)}" for name, error in call.failures]
        parts += [f"{d.name}: cooling down, back in {rest:.1f} s" for d, rest in zip(resting, left, strict=True)]
        why = "; ".join(parts) or "none was tried"
        if resting and len(resting) == len(parts):
            if self.when_all_cooling == "fail":
                tail = "nothing was sent (when_all_cooling='fail'; 'wait' waits for the first back)"
            else:
                left_s = max(0.0, call.end - time.monotonic())
                tail = f"the first is back after the call's deadline ({left_s:.1f} s left)"
            message = f"role {call.request.role!r}: every deployment is cooling down after failures ({why}); {tail}"
        else:
            message = f"role {call.request.role!r}: no deployment answered ({why})"
        last = call.failures[-1][1] if call.failures else None
        unavailable = DeploymentsUnavailable(
            redact(message),
            status_code=getattr(last, "status_code", None),
            retryable=True,
            retry_after=min(left) if left else None,
            role=call.request.role,
            model=call.request.model,
            attempts=sum(getattr(error, "attempts", 1) for _, error in call.failures) or 1,
        )
        unavailable.__cause__ = last
        if call.failures:
            unavailable.deployment = call.failures[-1][0]  # type: ignore[attr-defined]  # read by the log line and the span
        return unavailable

    # -- sending ---------------------------------------------------------------------------
    def _request_for(self, call: _Call, deployment: Deployment) -> Request:
        request = call.request
        changes: dict[str, Any] = {
            "model": deployment.model,
            "backend": deployment.backend,
            "endpoint": deployment.pipeline.backend.endpoint_for(deployment.model),
        }
        timeout = deployment.timeout
        if timeout is not None and (request.timeout is None or timeout < request.timeout):
            changes["timeout"] = timeout
        if call.tried:  # what is left of the call's deadline bounds this deployment's retries
            changes["metadata"] = {**request.metadata, "deadline": max(call.end - time.monotonic(), 0.001)}
        return request.replace(**changes)

    def _answered(self, deployment: Deployment, response: Response, started: float) -> Response:
        self.strategy.answered(deployment, time.monotonic() - started)
        return response.replace(deployment=deployment.name)

    def _release(self, deployment: Deployment, token: str | None) -> None:
        """The call is done with `deployment` (least-busy counts it out). Never raises: an answer in
        hand goes back, and a token left behind stops counting when it is stale."""
        if token is None:
            return
        try:
            self.state.leave(deployment.key, token)
        except Exception as failure:  # noqa: BLE001 - the call's outcome is decided
            _log.warning("a call of deployment %r could not be counted out: %s", deployment.name, failure)

    def _start(self, request: Request) -> _Call:
        deadline = request.metadata.get("deadline", self.deadline)
        return _Call(request, self.group.eligible(request.model), time.monotonic() + deadline)

    def __call__(self, request: Request, call_next: Handler) -> Response:
        call = self._start(request)
        while True:
            chosen = self._next(call)
            if isinstance(chosen, float):
                time.sleep(chosen)
                continue
            deployment, token = chosen
            started = time.monotonic()
            try:
                response = deployment.pipeline(self._request_for(call, deployment))
            except Exception as error:  # noqa: BLE001 - sorted by `_failed`, which raises what cannot move on
                self._failed(call, deployment, error)
                continue
            finally:
                self._release(deployment, token)
            return self._answered(deployment, response, started)

    async def _io(self, function: Callable[..., Any], *args: Any) -> Any:
        """A state step: off the event loop when the state does network I/O, inline when it does not."""
        if self.state.blocking:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        call = self._start(request)
        while True:
            chosen = await self._io(self._next, call)
            if isinstance(chosen, float):
                await asyncio.sleep(chosen)
                continue
            deployment, token = chosen
            started = time.monotonic()
            try:
                response = await deployment.pipeline.acall(self._request_for(call, deployment))
            except Exception as error:  # noqa: BLE001 - sorted by `_failed`, which raises what cannot move on
                self._failed(call, deployment, error)
                continue
            finally:
                if token is not None:
                    await self._io(self._release, deployment, token)
            return self._answered(deployment, response, started)

    def describe(self) -> str:
        return (
            f"{self.name} ({self.strategy.name} over {len(self.group.deployments)}; when all cool down: "
            f"{self.when_all_cooling}; cooldowns in {self.state.location})"
        )
