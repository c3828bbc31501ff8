"""Trace's optimisers with their answer shape enforced as a JSON schema.

Every optimiser trace-opt ships steps on a myopto role as Trace has it (`OptoPrime(params,
llm=get_llm("optimizer"))`). The JSON-parsing ones are here as drop-in subclasses that ask for a
schema: `OptoPrime`, `OptoPrimeMulti` and `OPRO`. `TextGrad` reads free text (its new value
between `<IMPROVED_VARIABLE>` tags), so it is Trace's own, re-exported for one import line.

Trace's `OptoPrime` asks for `response_format={"type": "json_object"}`: any JSON object will do,
so a small model (and now and then a large one) writes an object without a usable
`suggestion`, and the step changes nothing. The optimisers here ask for a JSON **schema**
instead: `reasoning` and `answer` (strings) and `suggestion`, an object whose keys are exactly
the trainable parameters' `py_name`s, each typed from the parameter's current value (int ->
integer, float -> number, bool -> boolean, str and code -> string, list -> array, dict ->
object). Cloud backends send it as native `json_schema`; a local model with `constrained=True`
decodes under its grammar and is closed validly when the token budget runs out. A backend that
refuses the schema still gets Trace's own fallback: the same call without `response_format`.

`reasoning` is capped (`reasoning_max_length`, 400 characters by default): a small model would
otherwise spend its whole budget explaining and never reach `suggestion`; a schema bound (not
a token share) keeps the cap in the one place every backend reads, and large models reason
well within it. `None` lifts it.

    from myopto.integrations.trace import OptoPrime
    optimizer = OptoPrime([x], llm=get_llm("optimizer"))

Importing this module imports Trace (`opto`); `import myopto` never does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opto.optimizers import OPRO as _TraceOPRO
from opto.optimizers import OptoPrime as _TraceOptoPrime
from opto.optimizers import OptoPrimeMulti as _TraceOptoPrimeMulti
from opto.optimizers import TextGrad

SCHEMA_NAME = "optimizer_step"
DEFAULT_REASONING_MAX_LENGTH = 400


def value_schema(value: Any) -> dict[str, Any]:
    """The JSON schema of a parameter's new value, from the type of its current one."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, (list, tuple)):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {}  # anything JSON can carry; Trace converts it with type(node.data)(...)


def suggestion_schema(
    parameters: Iterable[Any],
    *,
    reasoning: bool = True,
    reasoning_max_length: int | None = DEFAULT_REASONING_MAX_LENGTH,
) -> dict[str, Any]:
    """The answer schema for a step over `parameters` (Trace `ParameterNode`s; trainable ones count).

    `reasoning=False` leaves out `reasoning` and `answer` (OPRO's answer has only `suggestion`).
    """
    trainable = [node for node in parameters if getattr(node, "trainable", True)]
    suggestion = {
        "type": "object",
        "properties": {node.py_name: value_schema(node.data) for node in trainable},
        "required": [node.py_name for node in trainable],
        "additionalProperties": False,
    }
    properties: dict[str, Any] = {}
    if reasoning:
        properties["reasoning"] = {"type": "string"}
        if reasoning_max_length is not None:
            properties["reasoning"]["maxLength"] = reasoning_max_length
        properties["answer"] = {"type": "string"}
    properties["suggestion"] = suggestion
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _strict(schema: dict[str, Any]) -> bool:
    """OpenAI's strict mode needs every object closed and typed: only scalar parameters qualify."""
    values = schema["properties"]["suggestion"]["properties"].values()
    return all(value.get("type") in ("boolean", "integer", "number", "string") for value in values)


class SchemaAnswers:
    """Mixin for Trace optimisers that parse a JSON `suggestion`: `call_llm` asks for the schema."""

    reasoning_in_answer = True
    # given by the Trace optimiser this is mixed into
    parameters: list[Any]
    llm: Any

    def __init__(
        self, *args: Any, reasoning_max_length: int | None = DEFAULT_REASONING_MAX_LENGTH, **kwargs: Any
    ) -> None:
        self.reasoning_max_length = reasoning_max_length
        super().__init__(*args, **kwargs)

    def answer_schema(self) -> dict[str, Any]:
        """The schema of this step's answer, from the optimiser's trainable parameters now."""
        return suggestion_schema(
            self.parameters, reasoning=self.reasoning_in_answer, reasoning_max_length=self.reasoning_max_length
        )

    def call_llm(
        self, system_prompt: str, user_prompt: str, verbose: bool | str = False, max_tokens: int = 4096
    ) -> str:
        if verbose not in (False, "output"):
            print("Prompt\n", system_prompt + user_prompt)
        text: str = self._ask(system_prompt, user_prompt, max_tokens).choices[0].message.content
        if verbose:
            print("LLM response:\n", text)
        return text

    def _ask(self, system_prompt: str, user_prompt: str, max_tokens: int, **params: Any) -> Any:
        """The model's answer under this step's schema; without `response_format` when refused."""
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt}]
        schema = self.answer_schema()
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": _strict(schema)},
        }
        try:
            return self.llm(messages=messages, response_format=response_format, max_tokens=max_tokens, **params)
        except Exception:  # noqa: BLE001 - as Trace does: refused in any way, the plain call
            return self.llm(messages=messages, max_tokens=max_tokens, **params)


class OptoPrime(SchemaAnswers, _TraceOptoPrime):  # type: ignore[misc]  # Trace's class is Any (untyped)
    """Trace's `OptoPrime`, its answer enforced as `{"reasoning", "answer", "suggestion": {...}}`."""


class OptoPrimeMulti(SchemaAnswers, _TraceOptoPrimeMulti):  # type: ignore[misc]  # Trace's class is Any (untyped)
    """Trace's `OptoPrimeMulti`, each candidate enforced as OptoPrime's answer is.

    Trace's own asks `llm.create(..., n=...)` inside a bare `except` that returns no candidates,
    so any error (an LLM object without `create`, a refused parameter) ends in an `IndexError`
    far from its cause. Here a refused schema falls back to the plain call, and when that call
    fails too its error is raised as it is. `n` is sent only when more than one answer is asked
    for in one call (Trace's `generate_candidates` asks for one per temperature).
    """

    def call_llm(  # type: ignore[override]  # Trace's OptoPrimeMulti.call_llm returns a text per candidate
        self,
        system_prompt: str,
        user_prompt: str,
        verbose: bool | str = False,
        max_tokens: int = 4096,
        num_responses: int = 1,
        temperature: float = 0.0,
    ) -> list[str]:
        if verbose not in (False, "output"):
            print("Prompt\n", system_prompt + user_prompt)
        n = {"n": num_responses} if num_responses != 1 else {}
        response = self._ask(system_prompt, user_prompt, max_tokens, temperature=temperature, **n)
        texts = [choice.message.content for choice in response.choices]
        if verbose:
            print("LLM responses:\n", texts)
        return texts


class OPRO(SchemaAnswers, _TraceOPRO):  # type: ignore[misc]  # Trace's class is Any (untyped)
    """Trace's `OPRO`, its answer enforced as `{"suggestion": {...}}` (the shape its prompt asks for)."""

    reasoning_in_answer = False


__all__ = ["OPRO", "OptoPrime", "OptoPrimeMulti", "SchemaAnswers", "TextGrad", "suggestion_schema", "value_schema"]
