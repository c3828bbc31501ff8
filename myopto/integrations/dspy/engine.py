"""`RoleEngine` and `AsyncRoleEngine`: DSPy's engine contract (`complete(Request) -> Response`,
`stream(Request)`) served by a myopto role's chain.

Each DSPy call becomes one myopto request down the role's chain (cache, single flight, retry,
limits, budgets, usage, logs, tracing), and its answer one `dspy.lm15.Response` per candidate
(`myopto.integrations.dspy.call_scope`: `n` choices come from one request). When DSPy asks for
JSON (`JSONAdapter`: a `json_schema` of the signature's output fields, or `json_object`) and the
role decodes in process (a LocalSLM role: no native JSON mode), the call asks for
grammar-constrained decoding (`constrained=True`), so the answer always parses; a role or a
call that sets `constrained` itself keeps its choice. An answer that fails myopto's schema
check after its re-asks is handed to DSPy all the same: parsing it, and counting a failure, is
the adapter's job. The capability hints DSPy's adapters read (`supports_function_calling`,
`supports_response_schema`, `supported_params`) are the role's.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from myopto.client import RoleLLM, get_llm
from myopto.errors import StructuredOutputError
from myopto.request import Request
from myopto.response import Response
from myopto.streaming import AsyncStream, Stream

from .call_scope import DSPyCall, current_call, run_metadata
from .translation import StreamEvents, call_arguments, canonical_response, replayed_events, translated_errors

# What every role takes from DSPy; logprobs only where the backend returns them.
_PARAMS = frozenset(
    {
        "temperature",
        "max_tokens",
        "top_p",
        "stop",
        "seed",
        "n",
        "frequency_penalty",
        "presence_penalty",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    }
)


def decodes_in_process(llm: RoleLLM) -> bool:
    """Whether the role's backend makes JSON by decoding under a grammar rather than by a
    provider's native JSON mode (LocalSLM), by its declared capabilities."""
    backend = llm.pipeline.backend
    return bool(getattr(backend, "wants_json_instruction", False)) and not getattr(
        backend, "supports_json_schema", False
    )


class _RoleEngine:
    """What the sync and async engines share: the role, its request, and its capability hints."""

    supports_function_calling: ClassVar[bool] = True  # every backend takes tools (LocalSLM under a grammar)
    supports_response_schema: ClassVar[bool] = True  # json_schema natively, or by instruction plus a check
    supports_reasoning: ClassVar[bool] = False

    def __init__(self, role: str | RoleLLM = "executor") -> None:
        self.llm = role if isinstance(role, RoleLLM) else get_llm(role)
        self.role = self.llm.role
        self._named = not isinstance(role, RoleLLM)  # built from a role name: it can be saved

    @property
    def supported_params(self) -> frozenset[str]:
        """The OpenAI-style parameters the role's backend honours."""
        if decodes_in_process(self.llm):
            return _PARAMS
        return _PARAMS | {"logprobs", "top_logprobs"}

    def request(self, request: Any, call: DSPyCall | None) -> Request:
        """The myopto request of DSPy's `request` (its `n` and rollout from `call`), checked."""
        messages, response_format, params = call_arguments(request)
        if call is not None and call.left() > 1:
            params["n"] = call.left()
        sample = call.sample() if call is not None else None
        built = self.llm.request(
            messages, response_format=response_format, sample=sample, metadata=run_metadata(), **params
        )
        if built.response_format is not None and "constrained" not in built.params and decodes_in_process(self.llm):
            built = built.replace(params={**built.params, "constrained": True})
        return built

    def answer(self, response: Response, call: DSPyCall | None) -> Any:
        """The first candidate of a fresh answer; the call keeps the rest for the next ones."""
        if call is not None:
            call.took_answer(response)
        return canonical_response(response, 0, self.role, first=True)

    def waiting(self, call: DSPyCall | None) -> Any:
        """The next candidate when the role already decoded it (`n` > 1), else None."""
        index = call.waiting_choice() if call is not None else None
        if call is None or index is None or call.answer is None:
            return None
        call.took_waiting()
        return canonical_response(call.answer, index, self.role, first=False)

    # -- saving a program that holds this LM ----------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """The role's name (its config, API keys included, stays in the process that set it)."""
        if not self._named:
            raise TypeError(
                f"this DSPy LM runs on a RoleLLM object (role {self.role!r}) whose overrides are not saved; "
                "build it from the role name (myopto.integrations.dspy.lm('<role>')) to save it"
            )
        return {"role": self.role}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> _RoleEngine:
        role = state.get("role")
        if not isinstance(role, str):
            raise ValueError(f"a saved myopto engine names its role, got {state!r:.100}")
        return cls(role)

    def __deepcopy__(self, memo: dict[int, Any]) -> _RoleEngine:
        return copy.copy(self)  # the role is shared, not copied (a RoleLLM holds no state of its own)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} role={self.role!r}>"


class RoleEngine(_RoleEngine):
    """DSPy's sync engine on a myopto role (`dspy.LM(model, engine=RoleEngine("executor"))`)."""

    def async_twin(self) -> AsyncRoleEngine:
        """The async engine on the same role (and the same `RoleLLM`)."""
        twin = object.__new__(AsyncRoleEngine)
        twin.__dict__.update(self.__dict__)
        return twin

    def complete(self, request: Any) -> Any:
        call = current_call()
        waiting = self.waiting(call)
        if waiting is not None:
            return waiting
        with translated_errors(self.role):
            built = self.request(request, call)
            try:
                response = self.llm.pipeline(built)
            except StructuredOutputError as error:
                response = _answer_of(error)
        return self.answer(response, call)

    def stream(self, request: Any) -> Iterator[Any]:
        call = current_call()
        waiting = self.waiting(call)
        if waiting is not None:
            yield from replayed_events(waiting)
            return
        with translated_errors(self.role):
            built = self.request(request, call)
            events = StreamEvents(built.model)
            stream = Stream(self.llm.pipeline, built)
            try:
                for chunk in stream:
                    yield from events.of(chunk)
                response = stream.response
            except StructuredOutputError as error:
                response = _answer_of(error)
            finally:
                stream.close()
        yield from events.end(self.answer(response, call))

    def close(self) -> None:
        """Nothing to release: the role's chain is shared and lives as long as the process."""


class AsyncRoleEngine(_RoleEngine):
    """DSPy's async engine on a myopto role (`dspy.LM(..., async_engine=AsyncRoleEngine(...))`)."""

    async def complete(self, request: Any) -> Any:
        call = current_call()
        waiting = self.waiting(call)
        if waiting is not None:
            return waiting
        with translated_errors(self.role):
            built = self.request(request, call)
            try:
                response = await self.llm.pipeline.acall(built)
            except StructuredOutputError as error:
                response = _answer_of(error)
        return self.answer(response, call)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        call = current_call()
        waiting = self.waiting(call)
        if waiting is not None:
            for event in replayed_events(waiting):
                yield event
            return
        with translated_errors(self.role):
            built = self.request(request, call)
            events = StreamEvents(built.model)
            stream = AsyncStream(self.llm.pipeline.acall, built)
            try:
                async for chunk in stream:
                    for event in events.of(chunk):
                        yield event
                response = await stream.get_final_response()
            except StructuredOutputError as error:
                response = _answer_of(error)
            finally:
                await stream.aclose()
        for event in events.end(self.answer(response, call)):
            yield event

    async def aclose(self) -> None:
        """Nothing to release: the role's chain is shared and lives as long as the process."""


def _answer_of(error: StructuredOutputError) -> Response:
    """The answer a failed structured-output check kept, for DSPy's adapter to parse (or count
    as a parse failure); the error itself when it kept none."""
    if isinstance(error.response, Response):
        return error.response
    raise error
