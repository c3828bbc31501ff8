"""Every environment variable myopto reads, read here and nowhere else.

| variable | meaning | default |
|---|---|---|
| `TRACE_DEFAULT_LLM_BACKEND` | backend of a role whose config names none | `LiteLLM` |
| `TRACE_LLM_MODEL_<ROLE>` | model of one role (role upper-cased, non-alphanumerics as `_`) | - |
| `TRACE_LITELLM_MODEL` | LiteLLM's default model | `gpt-4o` |
| `TRACE_LOCALSLM_MODEL` | LocalSLM's default model | `Qwen/Qwen2-0.5B-Instruct` |
| `TRACE_CUSTOMLLM_URL` | CustomLLM's base URL | `OPENAI_BASE_URL`, else the OpenAI API |
| `OPENAI_BASE_URL` | the `openai` SDK's own; CustomLLM's if `TRACE_CUSTOMLLM_URL` is unset | OpenAI's API |
| `<PROVIDER>_API_BASE`, `<PROVIDER>_BASE_URL`, `<PROVIDER>_API_VERSION` | LiteLLM's own (see below) | - |
| `TRACE_CUSTOMLLM_MODEL` | CustomLLM's default model | - |
| `TRACE_CUSTOMLLM_API_KEY` | CustomLLM's API key | `OPENAI_API_KEY`, else none |
| `MYOPTO_CACHE` | cache mode: on, off, read_only, refresh, replay | `on` |
| `MYOPTO_CACHE_DIR` | cache directory | the platform's user cache dir + `/myopto` |
| `MYOPTO_MODEL_DIR` | converted copies of GGUF models, for fast reloads | the user cache dir + `/myopto-models` |
| `MYOPTO_CACHE_URL` | a Redis URL (`redis://`, `rediss://`, `unix://`, `redis+cluster://`): the cache lives there | - |
| `MYOPTO_CACHE_NAMESPACE` | prefix of every Redis key, to keep experiments or teams apart | `myopto` |
| `MYOPTO_CACHE_LEASE_SECONDS` | life of a single-flight lease on Redis (renewed while the call runs) | `10` |
| `MYOPTO_LIMITS_URL` | a Redis URL: rate limits and budgets shared by every worker | a Redis `MYOPTO_CACHE_URL` |
| `MYOPTO_LOG_FILE` | write one JSON line per call to this file | no log |
| `MYOPTO_LOG_MESSAGES` | `1` to include messages and answers in the log (and on spans) | `0` |
| `HF_HUB_OFFLINE` | Hugging Face's own switch: `1` and a hub id missing from the cache fails at once | - |
| `HF_ENDPOINT` | Hugging Face's own: the hub's address, probed before a download | `https://huggingface.co` |
| `MYOPTO_MAX_PAUSE_SECONDS` | the longest a 429's Retry-After may pause an endpoint's model | `300` |
| `MYOPTO_TRACING` | `otlp`: send OpenTelemetry spans over OTLP/HTTP (`OTEL_EXPORTER_OTLP_*` say where) | off |

`<PROVIDER>_API_BASE`, `<PROVIDER>_BASE_URL` and `<PROVIDER>_API_VERSION` (`OPENAI_BASE_URL`,
`AZURE_API_BASE`, `AZURE_API_VERSION`, ...) are read by LiteLLM; myopto reads those of the model's
provider to put them in the cache key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

DEFAULT_BACKEND = "LiteLLM"
DEFAULT_LITELLM_MODEL = "gpt-4o"
DEFAULT_LOCALSLM_MODEL = "Qwen/Qwen2-0.5B-Instruct"


def role_variable(role: str) -> str:
    """The name of the variable that sets one role's model: `TRACE_LLM_MODEL_<ROLE>`."""
    return "TRACE_LLM_MODEL_" + re.sub(r"[^A-Za-z0-9]", "_", role).upper()


@dataclasses.dataclass(frozen=True)
class Environment:
    """The values of the variables that decide one role's chain, read at one moment."""

    default_backend: str | None
    role_model: str | None
    litellm_model: str | None
    localslm_model: str | None
    customllm_url: str | None
    customllm_model: str | None
    customllm_api_key: str | None = dataclasses.field(repr=False)
    openai_api_key: str | None = dataclasses.field(repr=False)
    cache_mode: str | None = None
    cache_dir: str | None = None
    cache_url: str | None = None
    cache_namespace: str | None = None
    lease_seconds: str | None = None
    limits_url: str | None = None
    openai_base_url: str | None = None
    max_pause: str | None = None

    def backend_defaults(self, backend: str) -> dict[str, str]:
        """Model, base URL and key a backend falls back to when the role config gives none."""
        if backend == "LiteLLM":
            return {"model": self.litellm_model or DEFAULT_LITELLM_MODEL}
        if backend == "LocalSLM":
            return {"model": self.localslm_model or DEFAULT_LOCALSLM_MODEL}
        if backend == "CustomLLM":
            defaults = {
                "model": self.customllm_model,
                # resolved here, as the openai SDK would, so the chain (and the cache key) changes
                # when the variable does
                "base_url": self.customllm_url or self.openai_base_url,
                "api_key": self.customllm_api_key or self.openai_api_key,
            }
            return {key: value for key, value in defaults.items() if value}
        return {}


def _get(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() or None if value is not None else None


# The variables of one role's Environment, in field order after the role's own model variable.
_ROLE_FIELDS = (
    ("default_backend", "TRACE_DEFAULT_LLM_BACKEND"),
    ("litellm_model", "TRACE_LITELLM_MODEL"),
    ("localslm_model", "TRACE_LOCALSLM_MODEL"),
    ("customllm_url", "TRACE_CUSTOMLLM_URL"),
    ("customllm_model", "TRACE_CUSTOMLLM_MODEL"),
    ("customllm_api_key", "TRACE_CUSTOMLLM_API_KEY"),
    ("openai_api_key", "OPENAI_API_KEY"),
    ("cache_mode", "MYOPTO_CACHE"),
    ("cache_dir", "MYOPTO_CACHE_DIR"),
    ("cache_url", "MYOPTO_CACHE_URL"),
    ("cache_namespace", "MYOPTO_CACHE_NAMESPACE"),
    ("lease_seconds", "MYOPTO_CACHE_LEASE_SECONDS"),
    ("limits_url", "MYOPTO_LIMITS_URL"),
    ("openai_base_url", "OPENAI_BASE_URL"),
    ("max_pause", "MYOPTO_MAX_PAUSE_SECONDS"),
)


_ENVIRON = os.environ
_RAW_GET = getattr(getattr(os.environ, "_data", None), "get", None)
_ENCODE = getattr(os.environ, "encodekey", None)


T = TypeVar("T")


class _Snapshot(Generic[T]):
    """A fixed set of variables, parsed once and again only when one of them changed.

    `os.environ` re-encodes the key and decodes the value on each lookup; the raw values come
    straight from the mapping it keeps (`os.environ._data`, present on CPython everywhere), so
    the change check costs a few dictionary lookups, cheap enough for every call. Falls back to
    `os.environ` itself where that mapping is missing or `os.environ` was replaced.
    """

    __slots__ = ("_keys", "_names", "_parse", "_raw", "_value")

    def __init__(self, names: tuple[str, ...], parse: Callable[[], T]) -> None:
        self._names = names
        self._keys = tuple(_ENCODE(name) for name in names) if _ENCODE is not None else names
        self._parse = parse
        self._raw: tuple[object, ...] | None = None  # None: never parsed, so `_value` is unset
        self._value: T

    def value(self) -> T:
        if os.environ is _ENVIRON and _RAW_GET is not None and _ENCODE is not None:
            raw = tuple(map(_RAW_GET, self._keys))
        else:
            raw = tuple(os.environ.get(name) for name in self._names)
        if raw != self._raw:
            self._value = self._parse()
            self._raw = raw
        return self._value


_ROLE_SNAPSHOTS: dict[str, _Snapshot[Environment]] = {}


def read_environment(role: str) -> Environment:
    """Read the variables that decide `role`'s chain. Cheap: the same `Environment` object comes
    back while none of them changed, so callers may compare by identity first."""
    snapshot = _ROLE_SNAPSHOTS.get(role)
    if snapshot is None:
        variable = role_variable(role)
        snapshot = _ROLE_SNAPSHOTS[role] = _Snapshot(
            (variable, *(name for _, name in _ROLE_FIELDS)),
            lambda: Environment(role_model=_get(variable), **{field: _get(name) for field, name in _ROLE_FIELDS}),
        )
    return snapshot.value()


def openai_base_url() -> str | None:
    """`OPENAI_BASE_URL`: the `openai` SDK's base URL when it is given none."""
    return _get("OPENAI_BASE_URL")


# Providers LiteLLM may pick for a model named without a `provider/` prefix ("gpt-4o", "claude-...").
_UNPREFIXED_PROVIDERS = ("openai", "anthropic", "gemini", "vertex_ai", "mistral", "cohere", "groq", "deepseek", "xai")
_PROVIDER_SNAPSHOTS: dict[str | None, _Snapshot[tuple[tuple[str, str], ...]]] = {}


def provider_endpoint_variables(provider: str | None) -> tuple[str, ...]:
    """The variables LiteLLM reads for `provider`'s address and API version when a call names
    none: `<PROVIDER>_API_BASE`, `<PROVIDER>_BASE_URL`, `<PROVIDER>_API_VERSION` (also with the
    provider's underscores dropped: `vertex_ai` -> `VERTEXAI_API_BASE`). For None (a model
    named without a provider), those of the providers LiteLLM infers from a bare model name."""
    names: list[str] = []
    for one in (provider,) if provider else _UNPREFIXED_PROVIDERS:
        for stem in dict.fromkeys((one.upper(), one.upper().replace("_", ""))):
            names += [f"{stem}_BASE_URL", f"{stem}_API_BASE", f"{stem}_API_VERSION"]
    return tuple(dict.fromkeys(names))


def provider_endpoint_settings(provider: str | None) -> tuple[tuple[str, str], ...]:
    """(name, value) of each `provider_endpoint_variables(provider)` that is set. Cheap: the same
    tuple object comes back while none of them changed."""
    snapshot = _PROVIDER_SNAPSHOTS.get(provider)
    if snapshot is None:
        names = provider_endpoint_variables(provider)
        snapshot = _PROVIDER_SNAPSHOTS[provider] = _Snapshot(
            names, lambda: tuple((name, value) for name in names if (value := _get(name)) is not None)
        )
    return snapshot.value()


def _user_cache_root() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    return Path(_get("XDG_CACHE_HOME") or Path.home() / ".cache")


def model_dir() -> Path:
    """`MYOPTO_MODEL_DIR`, else the platform's user cache directory + `myopto-models`."""
    configured = _get("MYOPTO_MODEL_DIR")
    return Path(configured).expanduser() if configured else _user_cache_root() / "myopto-models"


def default_cache_dir() -> Path:
    """`MYOPTO_CACHE_DIR`, else the platform's user cache directory + `myopto`."""
    return cache_dir_from(_get("MYOPTO_CACHE_DIR"))


def cache_dir_from(configured: str | None) -> Path:
    """The cache directory a value of `MYOPTO_CACHE_DIR` names (an `Environment`'s `cache_dir`),
    else, when it is None or empty, the platform's user cache directory + `myopto`."""
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        return _user_cache_root() / "myopto" / "Cache"
    return _user_cache_root() / "myopto"


_LOG_SNAPSHOT = _Snapshot(
    ("MYOPTO_LOG_FILE", "MYOPTO_LOG_MESSAGES"),
    lambda: (
        _get("MYOPTO_LOG_FILE"),
        (_get("MYOPTO_LOG_MESSAGES") or "0").lower() in ("1", "true", "yes", "on"),
    ),
)


def log_settings() -> tuple[str | None, bool]:
    """(`MYOPTO_LOG_FILE`, whether `MYOPTO_LOG_MESSAGES` asks for messages and answers)."""
    return _LOG_SNAPSHOT.value()


def hub_settings() -> tuple[bool, str]:
    """(whether `HF_HUB_OFFLINE` forbids the hub, the hub's address from `HF_ENDPOINT`)."""
    offline = (_get("HF_HUB_OFFLINE") or "0").lower() in ("1", "true", "yes", "on")
    return offline, (_get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def tracing_setting() -> str | None:
    """`MYOPTO_TRACING`, lower-cased (`otlp` turns tracing on without code), or None."""
    value = _get("MYOPTO_TRACING")
    return value.lower() if value else None


def secret_values() -> list[str]:
    """Values of variables that hold credentials (`*_API_KEY`, `*_TOKEN`, `*_SECRET*`), and the
    credentials inside URLs any variable holds (a password, `?api-key=...`: `OPENAI_BASE_URL`,
    `TRACE_CUSTOMLLM_URL`, `AZURE_API_BASE`, ...), to redact."""
    from myopto.redaction import secrets_in_url  # here: redaction imports this module

    found = []
    for name, value in os.environ.items():
        if len(value) >= 8 and (name.endswith(("_API_KEY", "_TOKEN", "_KEY")) or "SECRET" in name):
            found.append(value)
        elif "://" in value:
            found += secrets_in_url(value)
    return found


DEFAULT_MAX_PAUSE_SECONDS = 300.0


def max_pause_setting() -> str | None:
    """`MYOPTO_MAX_PAUSE_SECONDS` as written (checked by whoever uses it), or None."""
    return _get("MYOPTO_MAX_PAUSE_SECONDS")
