"""`RoleLM`: a `dspy.LM` whose every call runs down a myopto role's chain.

It is DSPy's own `LM` with a custom engine (`RoleEngine`, `AsyncRoleEngine`), so DSPy keeps
what it owns, the same way for every engine: adapters, callbacks, `lm.history` and
`inspect_history()`, the usage tracker, `copy()` and saving. Two things it adds around each call
(`call_scope`): `n` candidates come from one request for `n` choices, and `rollout_id` keys a
fresh sample in myopto's cache. History entries carry myopto's cost (DSPy prices no custom
engine), so `sum(entry["cost"] for entry in lm.history)` reads what was spent.
"""

from __future__ import annotations

from typing import Any

import dspy

from myopto.client import RoleLLM

from .call_scope import dspy_call
from .engine import RoleEngine
from .translation import PROVIDER, myopto_cost

MODEL_PREFIX = "myopto/"


class RoleLM(dspy.LM):  # type: ignore[misc]  # dspy ships no type information: its LM is Any here
    """A `dspy.LM` on a myopto role; build it with `myopto.integrations.dspy.lm(role)`.

    `model` is `"myopto/<role>"` (what DSPy's history and cache show); `engine` and
    `async_engine` default to the role's. DSPy's own response cache and retries are off unless
    `cache=True` / `num_retries=` ask for them: myopto's cache and retry policy serve the role.
    Other keywords are `dspy.LM`'s (`temperature`, `max_tokens`, `callbacks`, ...).
    """

    def __init__(
        self,
        model: str = MODEL_PREFIX + "executor",
        *,
        engine: Any = None,
        async_engine: Any = None,
        cache: bool = False,
        num_retries: int = 0,
        **kwargs: Any,
    ) -> None:
        if engine is None:
            if not isinstance(model, str) or not model.startswith(MODEL_PREFIX) or model == MODEL_PREFIX:
                raise ValueError(f"a RoleLM's model is 'myopto/<role>', such as 'myopto/executor'; got {model!r}")
            engine = RoleEngine(model.removeprefix(MODEL_PREFIX))
        if async_engine is None and isinstance(engine, RoleEngine):
            async_engine = engine.async_twin()
        super().__init__(
            model, engine=engine, async_engine=async_engine, cache=cache, num_retries=num_retries, **kwargs
        )

    @property
    def role(self) -> str:
        """The myopto role this LM calls."""
        return str(getattr(self.engine, "role", self.model.removeprefix(MODEL_PREFIX)))

    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        with dspy_call(self.kwargs, kwargs):
            return super().__call__(prompt, messages=messages, **kwargs)

    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        with dspy_call(self.kwargs, kwargs):
            return await super().acall(prompt, messages=messages, **kwargs)

    def update_history(self, entry: dict[str, Any]) -> None:
        """DSPy's history entry, with myopto's cost where DSPy has none for a custom engine."""
        if entry.get("cost") is None:
            response = entry.get("response")
            responses = response if isinstance(response, (list, tuple)) else [response]
            costs = [myopto_cost(item) for item in responses]
            if costs and all(cost is not None for cost in costs):
                entry["cost"] = sum(cost for cost in costs if cost is not None)
                entry["cost_details"] = {"kind": "recorded", "currency": "USD", "provider": PROVIDER}
        super().update_history(entry)


def lm(role: str | RoleLLM = "executor", *, cache: bool = False, num_retries: int = 0, **kwargs: Any) -> RoleLM:
    """A DSPy LM whose every call runs down `role`'s chain: `dspy.configure(lm=lm("executor"))`.

    `role` is a role name, or a `RoleLLM` (`get_llm(role, **overrides)`) for overrides that hold
    for this LM only. myopto's cache, single flight, retries, rate limits, budgets, usage ledger,
    logs and tracing serve every call; DSPy's own cache and retries are off. To turn them back
    on (a second cache in front of myopto's, a second retry loop around it): `lm(role,
    cache=True, num_retries=3)`. Other keywords go to `dspy.LM` (`temperature`, `max_tokens`,
    `callbacks`, ...). A role that cannot work fails here, before any call.
    """
    engine = RoleEngine(role)
    name = MODEL_PREFIX + engine.role
    return RoleLM(name, engine=engine, cache=cache, num_retries=num_retries, **kwargs)
