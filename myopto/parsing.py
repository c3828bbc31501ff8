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


def try_parse_json(text: Any, default: Any = None) -> Any:
    """Parse the JSON value a model wrote, or return `default` (None) when there is none.

    Tries, in order: the whole text; each fenced code block (```json ... ```); the first JSON
    object or array that appears inside surrounding prose. A response object is read with
    `extract_text` first. A text that is JSON `null` gives None too: pass a `default` of your
    own (`try_parse_json(text, default=NO_JSON)`) to tell the two apart. Time grows linearly
    with the text's length, however it is nested.
    """
    if text is None:
        return default
    if not isinstance(text, str):
        try:
            text = extract_text(text)
        except TypeError:
            return default
    stripped = text.strip()
    if not stripped:
        return default
    value = _loads(stripped)
    if value is not NO_JSON:
        return value
    for block in _FENCE.findall(stripped):
        value = _loads(block.strip())
        if value is not NO_JSON:
            return value
    return _first_embedded(stripped, default)


class _NoJSON:
    """The type of `NO_JSON`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_JSON"


NO_JSON: Any = _NoJSON()  # "no JSON value in this text", unlike a JSON null


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return NO_JSON


# Where a JSON object or array may start: `{` before a key or `}`, `[` before a value or `]`.
_OPENER = re.compile(r"""\{(?=\s*["}])|\[(?=\s*[\[{"\-0-9tfn\]])""")
# Bounds on the search, so its time stays linear in the text's length however it is nested:
# failed attempts may decode _SEARCH_BUDGET characters per character of text (an attempt can run
# to the end of the text, and a text made of openers, '[[[[...' or '{"a": {"a": ...', would
# otherwise cost time quadratic in its length), and there are at most _MOST_ATTEMPTS of them
# (each failure costs time in proportion to its position: the decoder's error counts the lines
# before it).
_SEARCH_BUDGET = 4
_MOST_ATTEMPTS = 256


def _first_embedded(text: str, default: Any) -> Any:
    """The first `{...}` or `[...]` that decodes, scanning left to right, within a budget of work
    linear in the text's length."""
    budget = _SEARCH_BUDGET * len(text)
    for attempt, match in enumerate(_OPENER.finditer(text)):
        if attempt == _MOST_ATTEMPTS:
            return default
        start = match.start()
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except RecursionError:
            # nested deeper than the decoder goes: every opener after this one in the run is
            # inside the same value, and decoding each would hit the same limit again
            return default
        except ValueError as error:
            budget -= getattr(error, "pos", len(text)) - start + 1
            if budget < 0:
                return default
            continue
        return value
    return default
