"""Tool calls on local models: the tools told to the model, a grammar that admits only valid
calls, and the answer read back in OpenAI's shape.

A small model has no native tool-call format, so `LocalSLM` describes the tools in a system
message and decodes the answer under a grammar built from their JSON schemas (`ToolPlan.schema`):
one JSON object `{"name": ..., "arguments": {...}}` whose name is one of the tools and whose
arguments are valid for that tool. With `tool_choice="required"` the answer must be such a call;
naming a function narrows the grammar to that one tool; with `"auto"` (the default when tools are
given, as on OpenAI) the grammar also admits plain text that does not start with `{`. With
`"none"` the tools are not offered. One call per answer (`parallel_tool_calls` has no effect).

Every schema accepted here gives valid calls: keywords the grammar cannot enforce (`not`,
`uniqueItems`, `if`/`then`/`else`, ...: the README's table) are refused before decoding, and
each decoded call is validated with jsonschema as well.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from myopto.errors import InvalidRequest, MalformedResponse
from myopto.output_format import validation_error
from myopto.parsing import content_text
from myopto.response import Function, Message, ToolCall

from .json_shortest import shortest_json

# Keywords the grammar ignores (checked after decoding for response_format, refused for tools,
# which have no re-ask): the README's "checked after decoding" row.
_IGNORED = frozenset(
    {
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "not",
        "if",
        "then",
        "else",
        "$dynamicRef",
        "oneOf",
    }
)
_LOOKAROUNDS = ("(?=", "(?!", "(?<=", "(?<!")
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclasses.dataclass(frozen=True)
class ToolPlan:
    """How one request's tools are decoded: the grammar's JSON schema (the calls it admits),
    whether plain text is allowed instead (`"auto"`), and each tool's parameters schema."""

    schema: dict[str, Any]
    free_text: bool
    parameters: Mapping[str, Mapping[str, Any]]
    prompt: str

    def check_fits(self, encode: Callable[[str], list[int]], budget: int) -> None:
        """`InvalidRequest` when the shortest call does not fit in `budget` tokens (a call once
        begun must be closed, even under "auto")."""
        shortest = shortest_json(self.schema)
        needed = len(encode(shortest))
        if needed > budget:
            raise InvalidRequest(
                f"the shortest call to these tools ({shortest:.80}) takes {needed} tokens, more than the "
                f"{budget} this call may write: give max_tokens={needed} or more (a call the model "
                "begins must be finished)"
            )

    def read(self, text: str, index: int = 0) -> tuple[Message, str | None]:
        """The message a decoded answer is: a tool call (finish reason "tool_calls") when it is
        one, else plain text (finish reason None: the engine's own stands)."""
        if not text.startswith("{"):
            return Message(content=text), None
        try:
            call = json.loads(text)
        except ValueError:  # cut off by a stop string: text, not a call
            return Message(content=text), None
        name = call.get("name") if isinstance(call, dict) else None
        if not isinstance(name, str) or name not in self.parameters:
            return Message(content=text), None
        arguments = call.get("arguments", {})
        _check_arguments(name, arguments, self.parameters[name])
        encoded = json.dumps(arguments, ensure_ascii=False)
        digest = hashlib.sha256(f"{index}:{text}".encode()).hexdigest()[:24]
        tool_call = ToolCall(id=f"call_{digest}", function=Function(name=name, arguments=encoded))
        return Message(content=None, tool_calls=(tool_call,)), "tool_calls"


def tool_plan(tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any) -> ToolPlan | None:
    """The plan for a request's `tools` and `tool_choice` (already checked by `myopto.params`),
    or None when no function tool is offered. `InvalidRequest` for a tool whose parameters use a
    keyword the grammar cannot enforce."""
    functions = [tool["function"] for tool in tools or () if tool.get("type", "function") == "function"]
    if not functions or tool_choice == "none":
        return None
    if (
        tool_choice is not None
        and not isinstance(tool_choice, str)
        and tool_choice.get("type", "function") != "function"
    ):
        raise InvalidRequest(
            f"LocalSLM can only call function tools; tool_choice={tool_choice!r:.80} names another kind"
        )
    parameters = {function["name"]: function.get("parameters") or _ANY_OBJECT for function in functions}
    for name, schema in parameters.items():
        _refuse_ignored(schema, name, "")
    named = tool_choice["function"]["name"] if isinstance(tool_choice, Mapping) else None
    offered = [named] if named else list(parameters)
    cases = [
        _call_schema(name, parameters[name], f"#/anyOf/{index}/properties/arguments")
        for index, name in enumerate(offered)
    ]
    free_text = tool_choice in (None, "auto")
    prompt = _instructions(functions, named, free_text)
    return ToolPlan(schema={"anyOf": cases}, free_text=free_text, parameters=parameters, prompt=prompt)


def _call_schema(name: str, parameters: Mapping[str, Any], at: str) -> dict[str, Any]:
    """The schema of one call to `name`; the parameters' own `#` references are moved to where
    they now sit in the grammar's schema."""
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": _moved_references(parameters, at)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _moved_references(node: Any, at: str) -> Any:
    if isinstance(node, Mapping):
        moved = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/")):
                moved[key] = at + value[1:]
            elif key in _DATA_KEYWORDS:
                moved[key] = value
            else:
                moved[key] = _moved_references(value, at)
        return moved
    if isinstance(node, list):
        return [_moved_references(item, at) for item in node]
    return node


def _refuse_ignored(node: Any, tool: str, where: str) -> None:
    """`InvalidRequest` for a keyword in a tool's parameters that the grammar does not enforce."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _refuse_ignored(item, tool, f"{where}/{index}")
        return
    if not isinstance(node, Mapping):
        return
    problem = None
    ignored = sorted(_IGNORED & node.keys())
    if ignored:
        problem = f"the keyword {ignored[0]!r}"
    elif isinstance(node.get("allOf"), list) and len(node["allOf"]) > 1:
        problem = "allOf with several schemas"
    elif "multipleOf" in node and (node.get("type") != "integer" or _NUMBER_BOUNDS & node.keys()):
        problem = "multipleOf (enforced only on an integer without bounds)"
    elif isinstance(node.get("pattern"), str) and (
        any(a in node["pattern"] for a in _LOOKAROUNDS) or {"minLength", "maxLength"} & node.keys()
    ):
        problem = "a pattern with a lookaround or beside minLength/maxLength"
    if problem:
        raise InvalidRequest(
            f"LocalSLM decodes tool calls under a grammar, which cannot enforce {problem} (tool {tool!r}, at "
            f"{where or '(root)'} of its parameters); rewrite it (anyOf for oneOf, a pattern or enum for the rest) "
            "so every call is valid"
        )
    for key, value in node.items():
        if key not in _DATA_KEYWORDS:
            _refuse_ignored(value, tool, f"{where}/{key}")


_NUMBER_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


def _check_arguments(name: str, arguments: Any, schema: Mapping[str, Any]) -> None:
    """The grammar's guarantee, checked: a call that breaks its schema is a bug, never an answer."""
    problem = validation_error(arguments, schema)
    if problem is not None:
        raise MalformedResponse(f"LocalSLM decoded a call to {name} whose arguments break its schema: {problem}")


def _instructions(functions: Sequence[Mapping[str, Any]], named: str | None, free_text: bool) -> str:
    lines = ["You can call these tools:"]
    for function in functions:
        description = function.get("description")
        schema = json.dumps(function.get("parameters") or _ANY_OBJECT, separators=(",", ":"))
        lines.append(f"- {function['name']}" + (f": {description}" if description else "") + f" Arguments: {schema}")
    lines.append('To call a tool, answer with only a JSON object: {"name": "<tool name>", "arguments": {...}}.')
    if named:
        lines.append(f"Call the tool {named} now.")
    elif free_text:
        lines.append("If no tool is needed, answer in plain text instead.")
    else:
        lines.append("Call one of the tools now.")
    return "\n".join(lines)


def local_messages(messages: Sequence[Mapping[str, Any]], plan: ToolPlan | None) -> list[dict[str, Any]]:
    """The conversation as a chat template without tool support reads it: the tools described in
    the system message, each earlier assistant tool call written as the JSON the model answers
    with, and each tool result as a user message that names its call."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call = message.get("name") or message.get("tool_call_id") or "a tool"
            rendered.append({"role": "user", "content": f"Result of {call}: {content_text(message.get('content'))}"})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [_written_call(call) for call in message["tool_calls"]]
            text = "\n".join(filter(None, [content_text(message.get("content")), *calls]))
            rendered.append({"role": "assistant", "content": text})
        else:
            rendered.append(dict(message))
    if plan is None:
        return rendered
    if rendered and rendered[0].get("role") == "system":
        first = rendered[0]
        return [{**first, "content": f"{content_text(first.get('content'))}\n\n{plan.prompt}"}, *rendered[1:]]
    return [{"role": "system", "content": plan.prompt}, *rendered]


def _written_call(call: Any) -> str:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        return ""
    arguments = function.get("arguments")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        parsed = arguments
    return json.dumps(
        {"name": function.get("name"), "arguments": parsed if parsed is not None else {}}, ensure_ascii=False
    )
