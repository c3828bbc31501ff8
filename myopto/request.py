"""`Request`: one LLM call as it travels down a role's chain."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from myopto.errors import InvalidRequest

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
            raise InvalidRequest(
                f"messages[{index}]['role'] is {role!r}; use one of {sorted(_ROLES)}"
            )
        content = message.get("content")
        if content is None and not message.get("tool_calls") and not message.get("function_call"):
            raise InvalidRequest(f"messages[{index}] has no 'content'")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidRequest(
                f"messages[{index}]['content'] must be a string or a list of content parts, "
                f"got {type(content).__name__}"
            )
        frozen.append(MappingProxyType(dict(message)))
    if not frozen:
        raise InvalidRequest("messages is empty; give at least one message")
    return tuple(frozen)


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
    return hashlib.sha256(_CANONICAL.encode(data).encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One chat-completion call: everything that decides the answer, plus call-scoped extras.

    Immutable: a middleware that changes a request makes a new one with `replace()`.
    `model`, `messages`, `params`, `response_format`, `backend` and `endpoint` decide the answer
    and make up `fingerprint()`; `timeout` and `metadata` (run id, tags) do not. API keys are
    never part of a request: they live in the backend.
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
        return dataclasses.replace(self, **changes)

    def messages_list(self) -> list[dict[str, Any]]:
        """The messages as plain dicts, as SDKs want them."""
        return _plain(self.messages)

    def params_dict(self) -> dict[str, Any]:
        """The generation parameters as a plain dict."""
        return _plain(self.params)

    def response_format_dict(self) -> dict[str, Any] | None:
        """The requested response format as a plain dict, or None."""
        return None if self.response_format is None else _plain(self.response_format)

    def fingerprint_data(self) -> dict[str, Any]:
        """What decides the answer, as plain JSON data: the basis of `fingerprint()`.

        `metadata["sample"]` is included when present, so a caller can ask for distinct samples
        of the same request on purpose.
        """
        data = {
            "backend": self.backend,
            "endpoint": self.endpoint,
            "model": self.model,
            "messages": _plain(self.messages),
            "params": _plain(self.params),
            "response_format": self.response_format_dict(),
        }
        if "sample" in self.metadata:
            data["sample"] = _plain(self.metadata["sample"])
        return data

    def fingerprint(self) -> str:
        """A stable SHA-256 hex digest of `fingerprint_data()`, the same in any process or machine.

        Computed once per request. The read-only mappings are serialised as they stand (tuples
        as lists, mappings as objects with sorted keys), the same text `fingerprint_data()` gives.
        """
        key = self._key
        if key is None:
            data = {
                "backend": self.backend,
                "endpoint": self.endpoint,
                "model": self.model,
                "messages": [dict(message) for message in self.messages],
                "params": dict(self.params),
                "response_format": self.response_format,
            }
            if "sample" in self.metadata:
                data["sample"] = self.metadata["sample"]
            key = key_of(data)
            object.__setattr__(self, "_key", key)
        return key
