"""The old entry point, kept working: `from myopto.utils.llm import LLM; LLM(role="executor")`."""

from __future__ import annotations

from typing import Any

from myopto.client import RoleLLM
from myopto.router import overrides_from


class LLM(RoleLLM):
    """A role's LLM, as Trace's optimisers expect it: `llm(messages=..., response_format=..., max_tokens=...)`
    and `llm.create(messages=..., n=..., temperature=...)`, both returning the same `Response`.

    `LLM()` is the executor role; `LLM(role="optimizer")` another role. With no other argument
    the role's config and the `TRACE_*` environment variables decide backend and model;
    `model=`, `backend=` and any role option override them for this object only.
    """

    def __init__(
        self, model: str | None = None, *, role: str = "executor", backend: str | None = None, **options: Any
    ) -> None:
        super().__init__(role, overrides_from(model=model, backend=backend, **options))


__all__ = ["LLM"]
