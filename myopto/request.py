"""`Request`: one LLM call as it travels down a role's chain, and its cache key.

The cache key (`Request.fingerprint()`) is made from what reaches the wire and what the model is:
the backend, its endpoint as the backend resolved it, the model name, the messages, the
generation parameters, the response format, and `sample` when given. Each backend's
`endpoint_for(model)` says which server and model identity a call reaches, environment defaults
included (see `BaseBackend.endpoint`). Spellings that mean the same on the wire share a key:
equal numbers in the parameters (`0` and `0.0`) key the same, and backends normalise their
endpoints (a trailing `/`, the case of the host, a default port). Never in the key: API keys
(nor keys in a URL's query string or password), timeouts, retries, run tags and other metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from myopto.errors import InvalidRequest
from myopto.frozen import changed

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not value:
        return _EMPTY
    return MappingProxyType(dict(value))


def check_messages(messages: Any) -> tuple[Mapping[str, Any], ...]:
    """Validate chat messages and return them as a tuple of read-only mappings.

    Raises `InvalidRequest` saying which message is wrong and how, before any network call.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise InvalidRequest(
            "messages must be a list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}; to send a plain prompt use llm_text(prompt) "
            "or messages=[{'role': 'user', 'content': prompt}]"
        )
    frozen = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequest(
                f"messages[{index}] must be a dict with 'role' and 'content', got {type(message).__name__}"
            )
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequest(f"messages[{index}]['role'] is {role!r}; use one of {sorted(_ROLES)}")
        content = message.get("content")
        if content is None and not message.get("tool_calls") and not message.get("function_call"):
            raise InvalidRequest(f"messages[{index}] has no 'content'")
        if isinstance(content, str):
            if not content.isascii():
                _check_text(content, f"messages[{index}]['content']")
        elif isinstance(content, list):
            _check_parts(content, index)
        elif content is not None:
            raise InvalidRequest(
                f"messages[{index}]['content'] must be a string or a list of content parts, "
                f"got {type(content).__name__}"
            )
        if len(message) > 2 or "content" not in message:
            _check_fields(message, index)
        frozen.append(MappingProxyType(dict(message)))
    if not frozen:
        raise InvalidRequest("messages is empty; give at least one message")
    return tuple(frozen)


def _check_fields(message: Mapping[Any, Any], index: int) -> None:
    """A message's other fields (`name`, `tool_calls`, ...) are JSON data under string names:
    what can be keyed, stored and sent (a set, bytes or a numpy number cannot)."""
    for name, value in message.items():
        if name in ("role", "content"):
            continue
        if not isinstance(name, str):
            raise InvalidRequest(f"messages[{index}] has a field named {name!r}; field names are strings")
        if not is_json_data(value):
            raise InvalidRequest(
                f"messages[{index}][{name!r}] must be JSON data (strings, finite numbers, booleans, null, "
                f"lists, dicts with string keys), got {value!r:.80}"
            )


def _check_parts(parts: list[Any], index: int) -> None:
    """Content parts are dicts with a string `type`; a text part's `text` is a string."""
    for number, part in enumerate(parts):
        where = f"messages[{index}]['content'][{number}]"
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise InvalidRequest(
                f"{where} must be a content part such as {{'type': 'text', 'text': ...}}, got {part!r:.80}"
            )
        if not is_json_data(part):
            raise InvalidRequest(
                f"{where} must be JSON data (strings, finite numbers, booleans, null, lists, dicts with "
                f"string keys), got {part!r:.80}"
            )
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"{where} is a text part whose 'text' is not a string: {text!r:.80}")
            if not text.isascii():
                _check_text(text, where)


def _check_text(text: str, where: str) -> None:
    """Text must be encodable as UTF-8: a lone surrogate (from `errors='surrogateescape'` or a
    broken JSON escape) can be neither sent nor keyed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequest(
            f"{where} holds an unpaired surrogate {text[error.start]!r} at character {error.start}, which "
            "cannot be sent as UTF-8; clean the text first, e.g. text.encode('utf-8', 'replace').decode()"
        ) from None


def is_json_data(value: Any, depth: int = 0) -> bool:
    """True when `value` is plain JSON data: str, finite number, bool, None, lists and dicts of them
    with string keys (what can be keyed, stored and sent)."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 64:
        return False
    if isinstance(value, (list, tuple)):
        return all(is_json_data(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and is_json_data(item, depth + 1) for key, item in value.items())
    return False


_SCALARS = frozenset({int, str, bool, type(None)})


def key_numbers(value: Any) -> Any:
    """`value` with every float that equals an integer written as that integer (`0.0` -> `0`), at
    any depth: numbers that are equal on the wire make one key. Booleans stay booleans."""
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind in _SCALARS:
        return value
    if kind is MappingProxyType or kind is dict or isinstance(value, Mapping):
        return {str(key): item if type(item) in _SCALARS else key_numbers(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [key_numbers(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    """Turn read-only mappings and tuples into plain JSON types, for hashing and sending."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _as_dict(value: Any) -> Any:
    """json.dumps' fallback for the read-only mappings a request holds."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# One encoder for every fingerprint: sorted keys, no spaces, text as is; deeper read-only
# mappings (content parts, schemas) through `_as_dict`.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_as_dict)


def key_of(data: Mapping[str, Any]) -> str:
    """The cache key of a request's `fingerprint_data()`: SHA-256 of its canonical JSON text.

    `Request.fingerprint()` always equals `key_of(request.fingerprint_data())`, so a stored
    record's key can be checked against the request it records (`myopto cache import` does).
    """
    try:
        text = _CANONICAL.encode(data).encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate outside the message texts checked earlier
        raise InvalidRequest(
            f"the request holds text that cannot be sent as UTF-8 (an unpaired surrogate "
            f"{error.object[error.start]!r}); clean it first, e.g. text.encode('utf-8', 'replace').decode()"
        ) from None
    return hashlib.sha256(text).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One chat-completion call: everything that decides the answer, plus call-scoped extras.

    Immutable: a middleware that changes a request makes a new one with `replace()`.
    `model`, `messages`, `params`, `response_format`, `backend` and `endpoint` decide the answer
    and make up `fingerprint()`; `timeout` and `metadata` (run id, tags) do not, except
    `metadata["sample"]`. API keys are never part of a request: they live in the backend.
    `endpoint` is the backend's own description of where the call goes and what the model is
    (`backend.endpoint_for(model)`): the base URL as the SDK will use it (environment defaults
    such as `OPENAI_BASE_URL` resolved, normalised, secret query parameters masked), LiteLLM's
    API version and wire-deciding extras, a local model's engine and file identity.
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    response_format: Mapping[str, Any] | None = None
    role: str = "executor"
    backend: str = ""
    endpoint: str | None = None
    timeout: float | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    # Where a streamed call's chunks go (`myopto.streaming.StreamSink`), None for a plain call.
    # Not part of the key: a streamed and a plain call of the same request share one answer.
    sink: Any = dataclasses.field(default=None, repr=False, compare=False)
    # fingerprint() computed once per request (a replace() makes a new request and a new key)
    _key: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.messages, tuple) or not all(
            isinstance(message, MappingProxyType) for message in self.messages
        ):
            object.__setattr__(self, "messages", check_messages(self.messages))
        if not isinstance(self.params, MappingProxyType):
            object.__setattr__(self, "params", _freeze_mapping(self.params))
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", _freeze_mapping(self.metadata))
        if self.response_format is not None and not isinstance(self.response_format, MappingProxyType):
            object.__setattr__(self, "response_format", MappingProxyType(dict(self.response_format)))

    def replace(self, **changes: Any) -> Request:
        """A copy of this request with the given fields changed."""
        return changed(self, changes)

    def messages_list(self) -> list[dict[str, Any]]:
        """The messages as plain dicts, as SDKs want them."""
        messages: list[dict[str, Any]] = _plain(self.messages)
        return messages

    def params_dict(self) -> dict[str, Any]:
        """The generation parameters as a plain dict."""
        params: dict[str, Any] = _plain(self.params)
        return params

    def response_format_dict(self) -> dict[str, Any] | None:
        """The requested response format as a plain dict, or None."""
        return None if self.response_format is None else _plain(self.response_format)

    def fingerprint_data(self) -> dict[str, Any]:
        """What decides the answer, as plain JSON data: the basis of `fingerprint()`.

        `metadata["sample"]` is included when present, so a caller can ask for distinct samples
        of the same request on purpose. Numbers in `params` and `sample` are keyed by value
        (`key_numbers`: `0.0` as `0`); `endpoint` is keyed as the backend gave it.
        """
        data = {
            "backend": self.backend,
            "endpoint": self.endpoint,
            "model": self.model,
            "messages": _plain(self.messages),
            "params": key_numbers(self.params),
            "response_format": self.response_format_dict(),
        }
        if "sample" in self.metadata:
            data["sample"] = key_numbers(self.metadata["sample"])
        return data

    def fingerprint(self) -> str:
        """A stable SHA-256 hex digest of `fingerprint_data()`, the same in any process or machine.

        Computed once per request. The read-only mappings are serialised as they stand (tuples
        as lists, mappings as objects with sorted keys), the same text `fingerprint_data()` gives.
        `InvalidRequest` when some text cannot be encoded as UTF-8.
        """
        key = self._key
        if key is None:
            data = {
                "backend": self.backend,
                "endpoint": self.endpoint,
                "model": self.model,
                "messages": [dict(message) for message in self.messages],
                "params": key_numbers(self.params) if self.params else {},
                "response_format": self.response_format,
            }
            if "sample" in self.metadata:
                data["sample"] = key_numbers(self.metadata["sample"])
            key = key_of(data)
            object.__setattr__(self, "_key", key)
        return key
