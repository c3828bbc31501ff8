"""`StructuredOutput`: get JSON out of any backend, natively or by instruction, and parse it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from myopto.errors import ConfigError, SchemaError
from myopto.output_format import schema_of, validation_error
from myopto.parsing import NO_JSON, try_parse_json
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Choice, Response

MODES = ("auto", "native", "prompt")

JSON_OBJECT_INSTRUCTION = (
    "Answer with one valid JSON object and nothing else: no prose before or after it, no code fences."
)
JSON_SCHEMA_INSTRUCTION = (
    "Answer with one valid JSON value that conforms to this JSON schema, and nothing else: "
    "no prose before or after it, no code fences.\nJSON schema:\n{schema}"
)


def json_instruction(response_format: dict[str, Any]) -> str:
    """The instruction injected into the prompt for a backend with no native JSON mode."""
    schema = schema_of(response_format)
    if schema is None:
        return JSON_OBJECT_INSTRUCTION
    return JSON_SCHEMA_INSTRUCTION.format(schema=json.dumps(schema, ensure_ascii=False, sort_keys=True))


class StructuredOutput(Middleware):
    """Shapes a JSON request for the backend, then parses (and validates) the answer.

    `mode="auto"` sends OpenAI's `response_format` to backends that declare native support
    (`supports_json_schema` / `supports_json_object`) and, for the others, drops it and appends
    a JSON instruction (with the schema) to the last user message instead; `"native"` and
    `"prompt"` force one way. The answer is parsed into `response.parsed`. For a `json_schema`
    request an answer that does not parse or does not satisfy the schema raises
    `SchemaError` (the response is on the error) after `reasks` follow-up questions that quote
    the problem (1 by default; their tokens and cost are added to the response's). For
    `json_object` an unparsable answer is returned as it is with `parsed=None`, because callers
    such as Trace's OptoPrime parse the text themselves.
    """

    name = "structured_output"

    def __init__(
        self,
        *,
        json_schema: bool = False,
        json_object: bool = False,
        instruct: bool = False,
        mode: str = "auto",
        reasks: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"structured_output mode must be one of {MODES}, got {mode!r}")
        if isinstance(reasks, bool) or not isinstance(reasks, int) or reasks < 0:
            raise ConfigError(f"reasks must be a whole number >= 0, got {reasks!r}")
        self.reasks = reasks
        self.mode = mode
        self.native_schema = json_schema
        self.native_object = json_object
        self.instruct = instruct  # also tell the model in the prompt when sending natively (local models)

    def uses_native(self, response_format: dict[str, Any]) -> bool:
        if self.mode != "auto":
            return self.mode == "native"
        if response_format.get("type") == "json_schema":
            return self.native_schema
        return self.native_object

    def process_request(self, request: Request) -> Request:
        response_format = request.response_format_dict()
        if response_format is None:
            return request
        # A per-call `constrained=True` asks the backend to enforce the grammar: it needs the schema.
        constrained = request.params.get("constrained") is True
        native = constrained or self.uses_native(response_format)
        if native and not (self.instruct or constrained):
            return request
        messages = _with_instruction(request.messages_list(), json_instruction(response_format))
        return request.replace(messages=messages, response_format=response_format if native else None)

    def __call__(self, request: Request, call_next: Handler) -> Response:
        shaped = self.process_request(request)
        response = call_next(shaped)
        for _ in range(self._reasks(request)):
            response, failed = self._check(request, response)
            if not failed:
                return response
            for index, error in failed.items():  # each failing choice is asked again on its own
                response = _added(response, index, call_next(_reask(shaped, response.choices[index], error)))
        return self.parse(request, response)

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        shaped = self.process_request(request)
        response = await call_next(shaped)
        for _ in range(self._reasks(request)):
            response, failed = self._check(request, response)
            if not failed:
                return response
            for index, error in failed.items():
                response = _added(response, index, await call_next(_reask(shaped, response.choices[index], error)))
        return self.parse(request, response)

    def _reasks(self, request: Request) -> int:
        """Re-asks allowed: none for a streamed call (the caller has the text as it came; the
        JSON is parsed and validated at the end, and a failure raises `SchemaError` with it)."""
        return 0 if request.sink is not None else self.reasks

    def parse(self, request: Request, response: Response) -> Response:
        """Fill `parsed` for a JSON request (each choice's `message.parsed`; `response.parsed` is
        the first choice's), validating every choice against the schema when one was given:
        `SchemaError` names the first choice that fails, and carries the response."""
        response, failed = self._check(request, response)
        if failed:
            raise next(iter(failed.values()))
        return response

    def _check(self, request: Request, response: Response) -> tuple[Response, dict[int, SchemaError]]:
        """The response with every choice's parsed value filled in, and the choices (by position)
        that do not fit the schema, each with its `SchemaError`."""
        response_format = request.response_format_dict()
        if response_format is None:
            return response, {}
        schema = schema_of(response_format)
        several = len(response.choices) > 1
        choices, problems = [], {}
        for position, choice in enumerate(response.choices):
            message = choice.message
            if message.tool_calls and not message.content:  # it called a tool: no JSON to check
                choices.append(choice)
                continue
            text = message.content or ""
            value = try_parse_json(text, default=NO_JSON)
            if schema is None:
                parsed = value if isinstance(value, (dict, list)) else None
            else:
                parsed = None if value is NO_JSON else value
                problem = _schema_problem(value, schema)
                if problem is not None:
                    problems[position] = (problem, text)
            choices.append(dataclasses.replace(choice, message=dataclasses.replace(message, parsed=parsed)))
        response = response.replace(choices=choices)
        failed = {}
        for position, (problem, text) in problems.items():
            where = f"choice {position} of {len(choices)}: " if several else ""
            name = response_format["json_schema"]["name"]
            failed[position] = SchemaError(
                f"{where}the answer of {request.model!r} is not JSON (asked for schema {name!r}): {text[:200]!r}"
                if problem == _NOT_JSON
                else f"{where}the answer of {request.model!r} does not satisfy schema {name!r} {problem}",
                response=response,
                problem=problem if problem == _NOT_JSON else f"it does not satisfy the schema {problem}",
            )
        return response, failed

    def describe(self) -> str:
        native = [kind for kind, on in (("json_schema", self.native_schema), ("json_object", self.native_object)) if on]
        if self.mode == "prompt" or (self.mode == "auto" and not native):
            how = "JSON instruction injected into the prompt"
        elif self.mode == "native" or len(native) == 2:
            how = "native response_format" + (" plus a prompt instruction" if self.instruct else "")
        else:
            how = f"native {native[0]}, others by prompt instruction"
        return f"{self.name} ({how})"


REASK = (
    "Your answer is not valid: {problem}. Answer again with only the corrected JSON value "
    "that conforms to the schema, and nothing else."
)


_NOT_JSON = "it is not JSON"


def _schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    # a JSON null is an answer (a nullable schema accepts it): only no JSON at all is not
    if value is NO_JSON:
        return _NOT_JSON
    return validation_error(value, schema)


def _reask(shaped: Request, choice: Choice, error: SchemaError) -> Request:
    """The conversation so far plus the bad answer (one choice's) and a follow-up naming what is
    wrong, asking for one answer (`n` dropped)."""
    messages = [
        *shaped.messages_list(),
        {"role": "assistant", "content": choice.message.content or ""},
        {"role": "user", "content": REASK.format(problem=error.problem)},
    ]
    params = shaped.params
    if "n" in params:
        params = {name: value for name, value in params.items() if name != "n"}
    return shaped.replace(messages=messages, params=params)


def _added(earlier: Response, index: int, later: Response) -> Response:
    """`later` (the answer to a re-ask of choice `index`) in that choice's place among
    `earlier`'s choices, carrying the tokens, cost and time of both calls."""
    choices = list(earlier.choices)
    choices[index] = dataclasses.replace(later.choices[0], index=choices[index].index)
    cost = None if earlier.cost is None or later.cost is None else earlier.cost + later.cost
    latency = (earlier.latency or 0.0) + (later.latency or 0.0)
    return later.replace(
        choices=choices,
        usage=earlier.usage + later.usage,
        cost=cost,
        latency=latency,
        cached=earlier.cached and later.cached,
    )


def _with_instruction(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """Append the instruction to the last user message (closest to where the model answers)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = [*content, {"type": "text", "text": instruction}]
        else:
            content = f"{content}\n\n{instruction}" if content else instruction
        messages[index] = {**message, "content": content}
        return messages
    return [*messages, {"role": "user", "content": instruction}]
