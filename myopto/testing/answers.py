"""What `FakeOpenAIServer` answers: the shape of a chat completion, apart from the HTTP server.

`Answer` arranges a whole answer (tool calls, reasoning, usage); `chat_completion` builds the
response body for a request from its answers (`n` choices, logprobs when asked, usage counting
every choice); `count_tokens`, `logprobs_for`, `example_for_schema` and `default_answer` are the
server's conventions, reproducible so tests can compute what it will say. `EchoBackend` answers
by the same rules with no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from myopto.parsing import content_text

Responder = Callable[[dict[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Answer:
    """A whole answer to queue with `reply` (or return from a responder), beyond plain text.

    `tool_calls`: OpenAI-shaped calls (`{"id", "type", "function": {"name", "arguments"}}`) or
    short ones (`{"name": ..., "arguments": {...}}`; the id is made up, dict arguments are
    JSON-encoded). `reasoning_content`: the model's thinking, sent beside the content. `finish_reason`
    defaults to "tool_calls" when there are calls, else "stop". `usage`: counts that replace the
    server's own in the response's usage block (such as `{"prompt_tokens": 1_000_000,
    "prompt_tokens_details": {"cached_tokens": 900_000}}`); with `n`, the first choice's `usage` counts.
    `message_fields`: more fields of the message as sent, as other servers spell them (vLLM's
    `reasoning`, say).
    """

    content: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    message_fields: dict[str, Any] | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [_tool_call(call) for call in self.tool_calls]
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        message.update(self.message_fields or {})
        return message


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call in OpenAI's shape from a full or a short one (see `Answer`)."""
    function = call.get("function", call)
    arguments = function.get("arguments", "")
    return {
        "id": call.get("id") or "call_" + uuid.uuid4().hex[:24],
        "type": call.get("type", "function"),
        "function": {
            "name": function["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


def logprobs_for(text: str, top: int = 0) -> dict[str, Any]:
    """The server's logprobs of `text`: one token per word (a space before all but the first), a
    fixed log probability each, and `top` alternatives per position, most likely first."""
    tokens = [word if index == 0 else " " + word for index, word in enumerate(text.split())]
    content = []
    for index, token in enumerate(tokens):
        logprob = -round(0.125 * (index % 8 + 1), 3)
        alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}]
        alternatives += [
            {"token": f"{token}~{rank}", "logprob": logprob - rank, "bytes": list(f"{token}~{rank}".encode())}
            for rank in range(1, top)
        ]
        content.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode("utf-8")),
                "top_logprobs": alternatives[:top],
            }
        )
    return {"content": content, "refusal": None}


def count_tokens(text: str) -> int:
    """The server's token count: whitespace-separated words (simple and reproducible)."""
    return len(text.split())


def example_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A small value that satisfies `schema` (objects carry all their properties)."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return example_for_schema(target, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return example_for_schema(schema[key][0], root)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: example_for_schema(sub, root) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [example_for_schema(schema.get("items", {"type": "string"}), root) for _ in range(count)]
    if kind == "string":
        return "x" * max(schema.get("minLength", 0), 1) if "minLength" in schema else "example"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return None


def default_answer(body: dict[str, Any]) -> str:
    """What the server says when nothing else was arranged: JSON when JSON was asked, else an echo."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return json.dumps(example_for_schema(response_format["json_schema"]["schema"]))
    last = ""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            last = content_text(message.get("content"))
            break
    if response_format.get("type") == "json_object":
        return json.dumps({"echo": last})
    return f"echo: {last}"


def as_answer(reply: Any, body: dict[str, Any], responder: Responder | None = None) -> Answer:
    """A queued reply as an `Answer`: a string is the content, anything else not an `Answer` is
    JSON-encoded; None asks `responder` for one (or takes the default answer to `body`)."""
    if reply is None:
        reply = responder(body) if responder is not None else default_answer(body)
    if isinstance(reply, Answer):
        return reply
    return Answer(content=reply if isinstance(reply, str) else json.dumps(reply))


def chat_completion(body: dict[str, Any], answers: list[Answer], *, cached_tokens: int = 0) -> dict[str, Any]:
    """The chat completion answering `body` with `answers`, one per choice: logprobs when asked,
    and usage counting every choice (`cached_tokens` of the prompt reported as served from a
    prompt cache, capped at the prompt)."""
    choices: list[dict[str, Any]] = []
    completion_tokens = reasoning_tokens = 0
    for index, answer in enumerate(answers):
        message = answer.message()
        text = answer.content or ""
        calls = " ".join(
            f"{call['function']['name']} {call['function']['arguments']}" for call in message.get("tool_calls", ())
        )
        reasoning = count_tokens(answer.reasoning_content or "")
        completion_tokens += count_tokens(text) + count_tokens(calls) + reasoning
        reasoning_tokens += reasoning
        choice: dict[str, Any] = {
            "index": index,
            "message": message,
            "finish_reason": answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop"),
            "logprobs": logprobs_for(text, body.get("top_logprobs") or 0) if body.get("logprobs") else None,
        }
        choices.append(choice)
    prompt_tokens = sum(count_tokens(content_text(m.get("content"))) for m in body["messages"])
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached_tokens, prompt_tokens)}
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    usage.update(answers[0].usage or {})
    if answers[0].usage and "total_tokens" not in answers[0].usage:
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": choices,
        "usage": usage,
    }
