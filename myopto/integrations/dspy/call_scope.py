"""What one DSPy LM call asks of a role beyond its `dspy.lm15.Request`: how many candidates
(`n`), which rollout (`rollout_id`), and which myopto run.

DSPy's engine contract is one candidate per engine call: for `n=3` DSPy calls the engine three
times with the same Request, and it strips `rollout_id` (which DSPy's optimisers set to get a
fresh sample of the same prompt) before the engine sees it. A role can do better: one request
for `n` choices (one backend call, one cache entry, one answer a replay gives back whole), keyed
apart per rollout (myopto's `sample`). So `RoleLM` opens a `DSPyCall` around each call, in a
context variable the engine reads: the first candidate asks the role for all `n` choices, the
next ones are handed the choices already decoded.

The myopto run: `myopto.run(...)` lives in a context variable, which DSPy's worker threads
(`dspy.Evaluate`, `dspy.Parallel`, optimisers' evaluation) do not inherit; they inherit DSPy's
own settings. `run(...)` here enters the myopto run and records it in DSPy's settings too, and
a call that finds no myopto run of its own is tagged with that one.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import dspy

from myopto.response import Response
from myopto.runs import RunInfo, current_run
from myopto.runs import run as myopto_run

_SETTING = "myopto_run"  # the key of the myopto run in DSPy's settings


@dataclasses.dataclass
class DSPyCall:
    """One call of a `RoleLM`: its candidates and rollout, and the role's latest answer."""

    n: int = 1
    rollout: Any = None
    served: int = 0  # candidates handed to DSPy so far
    answer: Response | None = None  # the role's latest answer, holding one or more choices
    taken: int = 0  # choices of `answer` handed out

    def waiting_choice(self) -> int | None:
        """The index of a decoded choice of `answer` the next candidate takes, or None: ask the role."""
        if self.answer is not None and self.taken < len(self.answer.choices):
            return self.taken
        return None

    def left(self) -> int:
        """Candidates still to come, this one included (at least 1)."""
        return max(1, self.n - self.served)

    def sample(self) -> Any:
        """myopto's `sample` for the next request: the rollout, with the candidate's place when a
        first answer gave fewer choices than asked (so each later request keys apart); None when
        there is neither (a plain call keys as a plain call)."""
        if self.served == 0:
            return self.rollout
        return [self.rollout, self.served]

    def took_answer(self, answer: Response) -> None:
        """A fresh answer: its first choice goes to the candidate being served."""
        self.answer, self.taken = answer, 1
        self.served += 1

    def took_waiting(self) -> None:
        self.taken += 1
        self.served += 1


_current: contextvars.ContextVar[DSPyCall | None] = contextvars.ContextVar("myopto_dspy_call", default=None)


def current_call() -> DSPyCall | None:
    """The `RoleLM` call being served, or None (the engine was called some other way)."""
    return _current.get()


@contextlib.contextmanager
def dspy_call(defaults: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Iterator[DSPyCall]:
    """A `DSPyCall` for an LM call with `kwargs`, over the LM's `defaults` (as DSPy merges them)."""
    merged = {**defaults, **kwargs}
    n = merged.get("n") or 1
    call = DSPyCall(n=n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)
    call.rollout = merged.get("rollout_id")
    token = _current.set(call)
    try:
        yield call
    finally:
        _current.reset(token)


@contextlib.contextmanager
def run(name: str, *, max_cost_usd: float | None = None, **tags: Any) -> Iterator[RunInfo]:
    """`myopto.run(name, ...)` that also reaches the threads DSPy starts (`dspy.Evaluate`,
    `dspy.Parallel`, an optimiser's evaluation): their calls are tagged with this run and count
    against its budget. Use it in place of `myopto.run` around DSPy code."""
    with myopto_run(name, max_cost_usd=max_cost_usd, **tags) as info, dspy.context(**{_SETTING: info}):
        yield info


def run_metadata() -> dict[str, Any] | None:
    """The metadata that tags a call with the run `run(...)` recorded in DSPy's settings, when
    the calling thread has no myopto run of its own (a DSPy worker thread); None otherwise."""
    if current_run() is not None:
        return None
    info = dspy.settings.get(_SETTING)
    if not isinstance(info, RunInfo):
        return None
    metadata: dict[str, Any] = {"run": info.name, "tags": dict(info.tags)}
    if info.budgets:
        metadata["budgets"] = info.budgets
    return metadata
