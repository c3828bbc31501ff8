"""`RoleConfig`: what a user set for one role, checked when it is set.

`RoleConfig.from_options` sorts the keyword options of `set_role_config` / `get_llm` into
generation params, backend options and router settings, and refuses a bad value on the spot
(before anything is stored or sent) with a `ConfigError` that says what to fix. Fields left None
fall back to the environment and the defaults later, in `myopto.resolution`. Secrets given here
(an API key, keys in headers or URLs) are registered for masking and never shown by the repr.
The option checks the resolution reuses (`check_base_url`, `check_role`) live here too.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from myopto.backends import canonical_backend_name
from myopto.errors import ConfigError, InvalidRequest
from myopto.limiter import pause_cap
from myopto.logs import redact_options, register_secret, register_secrets_in
from myopto.middleware.cache import MODES as CACHE_MODES
from myopto.middleware.retry import Retry
from myopto.middleware.structured_output import MODES, StructuredOutput
from myopto.params import GENERATION_PARAMS, check_params
from myopto.pipeline import Middleware, as_middleware
from myopto.pricing import check_pricing
from myopto.redis_connection import check_url

# Role options that configure the retry middleware -> its constructor's names.
RETRY_OPTIONS = {
    "retries": "retries",
    "deadline": "deadline",
    "retry_backoff": "backoff",
    "retry_max_wait": "max_wait",
}
_FROZEN_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class RoleConfig:
    """What a user set for one role. Fields left None fall back to the environment and defaults."""

    backend: str | None = None
    model: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _FROZEN_EMPTY)
    options: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _FROZEN_EMPTY)
    middleware: tuple[Middleware, ...] = ()
    structured_output: str | None = None
    cache: str | None = None
    cache_dir: str | None = None
    retry: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _FROZEN_EMPTY)
    reasks: int | None = None
    pricing: Mapping[str, float] | None = None
    cache_url: str | None = None
    limits_url: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_cost_usd: float | None = None
    max_pause: float | None = None

    @classmethod
    def from_options(cls, backend: str | None = None, model: str | None = None, **options: Any) -> RoleConfig:
        """Sort keyword options into generation params, backend options and router settings."""
        if backend is not None:
            backend = canonical_backend_name(backend)
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ConfigError(f"model must be a non-empty string, got {model!r}")
        api_key = options.pop("api_key", None) or options.pop("key", None)
        register_secret(api_key)  # masked in every log line
        register_secrets_in(options)  # and keys in headers, LiteLLM's extra, URL query strings
        middleware = options.pop("middleware", None)
        if middleware is not None and (isinstance(middleware, (str, bytes)) or not isinstance(middleware, Iterable)):
            middleware = [middleware]
        structured_output = options.pop("structured_output", None)
        pricing = options.pop("pricing", None)
        if pricing is not None:
            pricing = MappingProxyType(check_pricing(pricing))
        reasks = options.pop("reasks", None)
        if reasks is not None:
            StructuredOutput(reasks=reasks)  # checks the value now, as Retry does below
        if structured_output is not None and structured_output not in MODES:
            raise ConfigError(f"structured_output must be one of {MODES}, got {structured_output!r}")
        cache = options.pop("cache", None)
        if cache is not None and cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
        cache_dir = check_cache_dir(options.pop("cache_dir", None))
        cache_url = options.pop("cache_url", None)
        if cache_url is not None:
            check_url(cache_url, what="cache_url")
        limits_url = options.pop("limits_url", None)
        if limits_url is not None:
            check_url(limits_url, what="limits_url")
        rpm, tpm, max_cost_usd = (positive(options.pop(name, None), name) for name in ("rpm", "tpm", "max_cost_usd"))
        max_pause = options.pop("max_pause", None)
        if max_pause is not None:
            max_pause = pause_cap(max_pause)  # a finite number of seconds > 0, at most a day
        retry = {name: options.pop(key) for key, name in RETRY_OPTIONS.items() if options.get(key) is not None}
        for key in RETRY_OPTIONS:
            options.pop(key, None)
        if retry:
            Retry(**retry)  # checks the values now
        explicit_params = options.pop("params", None) or {}
        params = {key: options.pop(key) for key in list(options) if key in GENERATION_PARAMS}
        try:
            params = check_params({**explicit_params, **params}, where="role config")
        except InvalidRequest as error:
            raise ConfigError(str(error)) from error
        backend_options = {key: value for key, value in options.items() if value is not None}
        check_backend_options(backend_options)
        return cls(
            backend=backend,
            model=model,
            api_key=api_key,
            params=MappingProxyType(params),
            options=MappingProxyType(backend_options),
            middleware=tuple(as_middleware(m) for m in middleware or ()),
            structured_output=structured_output,
            cache=cache,
            cache_dir=cache_dir,
            retry=MappingProxyType(retry),
            reasks=reasks,
            pricing=pricing,
            cache_url=cache_url,
            limits_url=limits_url,
            rpm=rpm,
            tpm=tpm,
            max_cost_usd=max_cost_usd,
            max_pause=max_pause,
        )

    def merged(self, update: RoleConfig) -> RoleConfig:
        """This config with every field `update` sets laid over it (params and options key by key)."""
        return RoleConfig(
            backend=update.backend or self.backend,
            model=update.model or self.model,
            api_key=update.api_key or self.api_key,
            params=MappingProxyType({**self.params, **update.params}),
            options=MappingProxyType({**self.options, **update.options}),
            middleware=update.middleware or self.middleware,
            structured_output=update.structured_output or self.structured_output,
            cache=update.cache or self.cache,
            cache_dir=update.cache_dir or self.cache_dir,
            retry=MappingProxyType({**self.retry, **update.retry}),
            reasks=update.reasks if update.reasks is not None else self.reasks,
            pricing=update.pricing or self.pricing,
            cache_url=update.cache_url or self.cache_url,
            limits_url=update.limits_url or self.limits_url,
            rpm=update.rpm or self.rpm,
            tpm=update.tpm or self.tpm,
            max_cost_usd=update.max_cost_usd or self.max_cost_usd,
            max_pause=update.max_pause or self.max_pause,
        )

    def __repr__(self) -> str:
        # secrets anywhere in the options (headers, LiteLLM's extra, a URL's query) are masked;
        # api_key is never shown
        shown = ", ".join(
            f"{field.name}={redact_options(_plain_value(getattr(self, field.name)))!r}"
            for field in dataclasses.fields(self)
            if field.repr
            and getattr(self, field.name) not in (None, (), _FROZEN_EMPTY)
            and getattr(self, field.name) != {}
        )
        return f"RoleConfig({shown})"


def check_role(role: Any) -> str:
    """A role is a non-empty string; return it, or `ConfigError`."""
    if not isinstance(role, str) or not role.strip():
        raise ConfigError(f"a role is a non-empty string such as 'executor', got {role!r}")
    return role


def check_base_url(url: Any, role: str) -> None:
    """A backend's `base_url` must be an http(s) URL with a host; caught here, not after retries."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # such as a broken IPv6 address
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"role {role!r}: base_url must be an http(s) URL such as http://localhost:8000/v1, got {url!r} "
            "(from set_role_config(..., base_url=...), TRACE_CUSTOMLLM_URL or OPENAI_BASE_URL)"
        )


def check_cache_dir(value: Any) -> str | None:
    """A cache directory is a path (str or os.PathLike), not a number or an empty string."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"cache_dir must be a directory path (a str or pathlib.Path), got {value!r}")
    return value


def check_backend_options(options: Mapping[str, Any]) -> None:
    """Options several backends share are checked when set, not when the first call fails."""
    if options.get("timeout") is not None:
        positive(options["timeout"], "timeout (seconds)")
    max_retries = options.get("max_retries")
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
    for name in ("extra", "extra_headers"):
        if name in options and not isinstance(options[name], Mapping):
            raise ConfigError(f"{name} must be a dict, got {type(options[name]).__name__}")


def positive(value: Any, name: str) -> float | None:
    """`value` as a float when it is a finite number > 0, None when None; `ConfigError` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _plain_value(value: Any) -> Any:
    return {key: _plain_value(item) for key, item in value.items()} if isinstance(value, Mapping) else value
