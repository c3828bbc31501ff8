"""Routing: which of a role's deployments a call tries first, and where it goes after a failure.

A strategy chooses among the deployments that are not resting; the call tries that one first:

- `weighted`: smooth weighted round robin (nginx's): over any run of calls each deployment gets
  its weight's share (its `rpm` when it gives no weight), exactly, and spread out evenly;
- `least-busy`: the one with the fewest calls in flight (in the whole fleet when the role's
  limits are shared through Redis), ties taken in turn;
- `latency`: the one with the lowest recent latency; a deployment without an answer in the last
  minute is tried first, so each is measured;
- `fallback-order`: the order they are listed in.

A deployment of weight 0 is never tried first: it is a fallback only.

After a transient failure the call moves on: to the failed deployment's `fallbacks` when the
role names them (followed on, depth first), else to the others in the strategy's order. After a
context-window error it moves to the deployment's `context_window_fallbacks`, else to the
deployments whose known context window is larger, smallest first. `check_fallbacks` refuses, when
the role is configured, a name that is no deployment and a fallback that leads back to itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from myopto.errors import BadRequest, ConfigError

STRATEGIES = ("weighted", "least-busy", "latency", "fallback-order")
RECENT_SECONDS = 60.0  # a latency older than this is no longer "recent": the deployment is measured again


@dataclasses.dataclass(eq=False)
class Deployment:
    """One deployment as a chain runs it: its name, its identity in shared state (`key`, a hash
    of backend, endpoint, model and credential, never the credential), and its own chain
    (`pipeline`: retry, cooldown bookkeeping, limits, backend)."""

    name: str
    key: str
    backend: str
    model: str
    endpoint: str | None
    weight: float
    context_window: int | None
    timeout: float | None
    pipeline: Any


class Strategy:
    """Chooses the deployment a call tries first (`choose`, among those not resting) and orders
    the rest for its fallbacks (`order`); told how each answered call went (`answered`)."""

    name = "fallback-order"
    shared_busy = False  # least-busy: the shared state chooses, and counts calls in flight

    def choose(self, available: Sequence[Deployment]) -> Deployment:
        # the first listed, unless it is a fallback only (weight 0) and another is not
        for deployment in available:
            if deployment.weight > 0:
                return deployment
        return available[0]

    def order(self, deployments: Sequence[Deployment]) -> list[Deployment]:
        """The deployments in the order a call falls back over them: the listed order, fallback-only last."""
        return sorted(deployments, key=lambda d: d.weight <= 0)

    def answered(self, deployment: Deployment, seconds: float) -> None:
        """A call to `deployment` was answered in `seconds`."""


class Weighted(Strategy):
    """Smooth weighted round robin: each turn every deployment gains its weight, the one with the
    most is chosen and gives back the sum of all. Deployments resting take no part.

    With whole-number weights the turns repeat after `sum(weights)` calls, so for the common case
    (the role's deployments, none resting) the turns are worked out once and then read in order:
    a call to three deployments costs what a call to one does."""

    name = "weighted"
    MAX_ROUND = 4096  # a longer round of turns (large rpm weights) is worked out call by call

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, float] = {}
        # one round of turns per group of deployments (a tuple, held here so its id stays its own)
        self._rounds: dict[int, tuple[Sequence[Deployment], Iterator[Deployment] | None]] = {}

    def choose(self, available: Sequence[Deployment]) -> Deployment:
        if len(available) == 1:
            return available[0]
        if type(available) is tuple:
            known = self._rounds.get(id(available))
            if known is None or known[0] is not available:
                known = self._round_of(available)
            if known[1] is not None:
                return next(known[1])
        return self._turn(available, self._current)

    def _turn(self, available: Sequence[Deployment], current: dict[str, float]) -> Deployment:
        best: Deployment | None = None
        with self._lock:
            total = most = 0.0
            for deployment in available:
                weight = deployment.weight
                if weight <= 0:
                    continue
                total += weight
                gained = current.get(deployment.name, 0.0) + weight
                current[deployment.name] = gained
                if best is None or gained > most:
                    best, most = deployment, gained
            if best is None:  # only fallbacks left
                return available[0]
            current[best.name] = most - total
        return best

    def _round_of(self, available: tuple[Deployment, ...]) -> tuple[Sequence[Deployment], Iterator[Deployment] | None]:
        weights = [d.weight for d in available if d.weight > 0]
        turns: Iterator[Deployment] | None = None
        if weights and all(float(w).is_integer() for w in weights):
            # the turns depend on the weights' proportions only: 60000 and 20000 rpm take turns as 3 and 1
            length = sum(weights) // math.gcd(*(int(w) for w in weights))
            if length <= self.MAX_ROUND:
                current: dict[str, float] = {}
                turns = itertools.cycle([self._turn(available, current) for _ in range(int(length))])
        known = (available, turns)
        with self._lock:
            if len(self._rounds) > 64:
                self._rounds.clear()
            self._rounds[id(available)] = known
        return known

    def order(self, deployments: Sequence[Deployment]) -> list[Deployment]:
        return sorted(deployments, key=lambda d: -d.weight)


class LeastBusy(Strategy):
    """The deployment with the fewest calls in flight; the middleware asks the shared state, which
    chooses and counts the call in one step (`take_least_busy`)."""

    name = "least-busy"
    shared_busy = True


class Latency(Strategy):
    """The lowest recent latency first (an average that follows the last few answers)."""

    name = "latency"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, float]] = {}  # name -> (average seconds, when last answered)

    def choose(self, available: Sequence[Deployment]) -> Deployment:
        return self.order(available)[0]

    def order(self, deployments: Sequence[Deployment]) -> list[Deployment]:
        now = time.monotonic()
        seen = self._seen

        def rank(deployment: Deployment) -> tuple[bool, bool, float]:
            average, when = seen.get(deployment.name, (0.0, -RECENT_SECONDS))
            recent = now - when < RECENT_SECONDS
            return (deployment.weight <= 0, recent, average if recent else 0.0)

        return sorted(deployments, key=rank)

    def answered(self, deployment: Deployment, seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            average, when = self._seen.get(deployment.name, (seconds, now))
            if now - when >= RECENT_SECONDS:
                average = seconds
            self._seen[deployment.name] = (0.5 * average + 0.5 * seconds, now)


def strategy_for(name: str) -> Strategy:
    """A fresh strategy (with its own state) for a role's chain."""
    if name == "weighted":
        return Weighted()
    if name == "least-busy":
        return LeastBusy()
    if name == "latency":
        return Latency()
    return Strategy()


# -- fallbacks ----------------------------------------------------------------------------------


def followed(name: str, graph: Mapping[str, Sequence[str]]) -> list[str]:
    """The deployments `name`'s fallbacks lead to, depth first, each once (checked: no loop)."""
    order: list[str] = []

    def visit(current: str) -> None:
        for successor in graph.get(current, ()):
            if successor not in order and successor != name:
                order.append(successor)
                visit(successor)

    visit(name)
    return order


def plan(first: Deployment, ranked: Sequence[Deployment], fallbacks: Mapping[str, Sequence[str]]) -> list[Deployment]:
    """The deployments a call tries in turn: `first`, then its fallbacks when the role names them,
    else the rest of `ranked` (all the deployments it may go to, in the strategy's order)."""
    if first.name not in fallbacks:
        return [first, *(d for d in ranked if d is not first)]
    by_name = {d.name: d for d in ranked}
    return [first, *(by_name[name] for name in followed(first.name, fallbacks) if name in by_name)]


def larger_context(
    failed: Deployment, deployments: Sequence[Deployment], context_fallbacks: Mapping[str, Sequence[str]]
) -> list[Deployment]:
    """Where a call goes after `failed` said the prompt is over its context window: its
    `context_window_fallbacks`, else the deployments with a larger known window, smallest first."""
    by_name = {d.name: d for d in deployments}
    if failed.name in context_fallbacks:
        return [by_name[name] for name in followed(failed.name, context_fallbacks)]
    if failed.context_window is None:
        return []
    window = failed.context_window
    larger = [d for d in deployments if d.context_window is not None and d.context_window > window]
    return sorted(larger, key=lambda d: d.context_window or 0)


def check_fallbacks(graph: Mapping[str, Sequence[str]], names: Sequence[str], option: str, role: str) -> None:
    """`ConfigError` for a name in `graph` that is no deployment of the role, and for a loop."""
    known = set(names)
    for source, targets in graph.items():
        unknown = [name for name in (source, *targets) if name not in known]
        if unknown:
            raise ConfigError(
                f"role {role!r}: {option} names {unknown[0]!r}, which is no deployment of the role; "
                f"its deployments are {sorted(known)}"
            )
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            loop = " -> ".join([*path[path.index(name) :], name])
            raise ConfigError(f"role {role!r}: {option} loop {loop}: a deployment's fallbacks must not lead back to it")
        if name in done:
            return
        for successor in graph.get(name, ()):
            visit(successor, [*path, name])
        done.add(name)

    for source in graph:
        visit(source, [])


# -- errors that another deployment can fix -----------------------------------------------------

# How providers and servers say a prompt is over the model's context window: OpenAI and Azure
# (`context_length_exceeded`, "maximum context length"), vLLM (the same words), LiteLLM's
# `ContextWindowExceededError`, Anthropic ("prompt is too long"), llama.cpp's server ("exceeds the
# available context size"), Gemini ("exceeds the maximum number of tokens"), Ollama and others.
_CONTEXT_WINDOW = re.compile(
    r"context[_ ]length[_ ]exceeded|context ?window ?exceeded|maximum context length|context window|"
    r"prompt is too long|exceeds? the available context|exceed_context_size|input is too long|"
    r"exceeds the maximum (number of )?tokens|too many (input )?tokens",
    re.IGNORECASE,
)


def is_context_window_error(error: BaseException) -> bool:
    """True when `error` says the prompt is over the model's context window (a refused request
    another deployment with a larger window may answer)."""
    if not isinstance(error, BadRequest):
        return False
    cause = error.__cause__
    text = f"{error} {getattr(cause, 'sdk_type', '')}"
    return _CONTEXT_WINDOW.search(text) is not None
