"""Reading answers: the text of any response object, and JSON out of a model's text."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def extract_text(response: Any) -> str:
    """The answer text of a response of any common shape.

    Accepts a string, myopto's `Response`, an OpenAI SDK `ChatCompletion`, a LiteLLM
    `ModelResponse`, a chat-completion dict, or a message dict. Returns "" for an empty answer.
    Raises `TypeError` for anything else.
    """
    if response is None:
        return ""
    if isinstance(response, str):
        return response
    if isinstance(response, bytes):
        return response.decode("utf-8", errors="replace")
    text = getattr(response, "text", None)
    if isinstance(text, str) and not isinstance(response, Mapping):
        return text
    choices = _get(response, "choices")
    if choices:
        first = choices[0]
        message = _get(first, "message")
        if message is not None:
            return content_text(_get(message, "content"))
        return content_text(_get(first, "text"))
    if isinstance(response, Mapping):
        for key in ("content", "text", "output"):
            if key in response:
                return content_text(response[key])
    content = getattr(response, "content", None)
    if content is not None:
        return content_text(content)
    raise TypeError(f"cannot find the answer text in a {type(response).__name__}")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def content_text(content: Any) -> str:
    """The text of a message's `content`: a string, or a list of content parts (their text joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(_get(part, "text") or "") for part in content)
    return str(content)


def try_parse_json(text: Any) -> Any:
    """Parse the JSON value a model wrote, or return None when there is none.

    Tries, in order: the whole text; each fenced code block (```json ... ```); the first JSON
    object or array that appears inside surrounding prose. A response object is read with
    `extract_text` first.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        try:
            text = extract_text(text)
        except TypeError:
            return None
    stripped = text.strip()
    if not stripped:
        return None
    value = _loads(stripped)
    if value is not _MISSING:
        return value
    for block in _FENCE.findall(stripped):
        value = _loads(block.strip())
        if value is not _MISSING:
            return value
    return _first_embedded(stripped)


_MISSING = object()


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _MISSING


def _first_embedded(text: str) -> Any:
    """The first `{...}` or `[...]` that decodes, scanning left to right."""
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        return value
    return None
