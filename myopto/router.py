"""The role router: one config and one chain per role, built from explicit config and `TRACE_*` variables.

Resolution, for each role:
- backend: the role's config > `TRACE_DEFAULT_LLM_BACKEND` > LiteLLM;
- model: the role's config > `TRACE_LLM_MODEL_<ROLE>` > the backend's default
  (`TRACE_LITELLM_MODEL` or gpt-4o; `TRACE_LOCALSLM_MODEL` or Qwen/Qwen2-0.5B-Instruct;
  `TRACE_CUSTOMLLM_MODEL`, with `TRACE_CUSTOMLLM_URL` and `TRACE_CUSTOMLLM_API_KEY`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from myopto.backends import backend_class, canonical_backend_name
from myopto.errors import ConfigError, InvalidRequest
from myopto.limiter import limiter_for, pause_cap
from myopto.logs import redact_options, register_secret, register_secrets_in
from myopto.middleware.cache import MODES as CACHE_MODES
from myopto.middleware.cache import Cache
from myopto.middleware.limits import Limits
from myopto.middleware.logging import Logging
from myopto.middleware.retry import Retry
from myopto.middleware.structured_output import MODES, StructuredOutput
from myopto.middleware.tracing import Tracing
from myopto.middleware.usage import Usage
from myopto.params import GENERATION_PARAMS, check_params
from myopto.pipeline import Middleware, Pipeline, as_middleware
from myopto.pricing import check_pricing
from myopto.redis_connection import check_url, is_redis_url
from myopto.settings import (
    DEFAULT_BACKEND,
    Environment,
    default_cache_dir,
    read_environment,
    role_variable,
    tracing_setting,
)
from myopto.stores import open_store

DEFAULT_ROLES = ("executor", "optimizer", "metaoptimizer")
USER_SLOT = "user"  # where a user's middleware goes unless placed before/after a named one
# Role options that configure the retry middleware -> its constructor's names.
_RETRY_OPTIONS = {
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
        cache_dir = _check_cache_dir(options.pop("cache_dir", None))
        cache_url = options.pop("cache_url", None)
        if cache_url is not None:
            check_url(cache_url, what="cache_url")
        limits_url = options.pop("limits_url", None)
        if limits_url is not None:
            check_url(limits_url, what="limits_url")
        rpm, tpm, max_cost_usd = (_positive(options.pop(name, None), name) for name in ("rpm", "tpm", "max_cost_usd"))
        max_pause = options.pop("max_pause", None)
        if max_pause is not None:
            max_pause = pause_cap(max_pause)  # a finite number of seconds > 0, at most a day
        retry = {name: options.pop(key) for key, name in _RETRY_OPTIONS.items() if options.get(key) is not None}
        for key in _RETRY_OPTIONS:
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
        _check_backend_options(backend_options)
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


@dataclasses.dataclass(frozen=True)
class ResolvedRole:
    """Everything a role's chain is built from, after config, environment and defaults are merged."""

    role: str
    backend: str
    model: str
    params: Mapping[str, Any]
    options: Mapping[str, Any] = dataclasses.field(repr=False)
    middleware: tuple[Middleware, ...]
    structured_output: str
    cache: str
    cache_location: str  # a cache directory or a Redis URL
    retry: Mapping[str, Any]
    reasks: int
    pricing: Mapping[str, float] | None
    namespace: str  # of the Redis keys
    lease_seconds: float
    limits_url: str | None  # None: rate limits and budgets are this process's own
    rpm: float | None
    tpm: float | None
    max_cost_usd: float | None
    max_pause: float  # the longest a 429's Retry-After pauses this role's endpoint and model
    source: Mapping[str, str]  # where backend and model came from, for `myopto roles`


@dataclasses.dataclass(frozen=True)
class _Placement:
    middleware: Middleware
    roles: frozenset[str] | None
    before: str | None
    after: str | None


class Router:
    """Holds the role configs and builds (and caches) each role's chain. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._configs: dict[str, RoleConfig] = {}
        self._placements: list[_Placement] = []
        self._version = 0
        self._chains: dict[str, tuple[int, Environment, ResolvedRole, Pipeline]] = {}

    # -- configuration ---------------------------------------------------------------------
    def configure(self, updates: Mapping[str, RoleConfig]) -> None:
        """Lay each update over its role's config, check all, then store all (or none) and
        invalidate those roles' chains."""
        with self._lock:
            merged = {}
            for role, update in updates.items():
                merged[check_role(role)] = self._configs.get(role, RoleConfig()).merged(update)
                self.resolve(role, merged_config=merged[role])  # raises before anything is stored
            self._configs.update(merged)
            self._version += 1

    def config(self, role: str) -> RoleConfig:
        with self._lock:
            return self._configs.get(role, RoleConfig())

    def roles(self) -> list[str]:
        with self._lock:
            return list(dict.fromkeys([*DEFAULT_ROLES, *self._configs]))

    def clear(self, role: str | None = None) -> None:
        with self._lock:
            if role is None:
                self._configs.clear()
                self._placements.clear()
            else:
                self._configs.pop(role, None)
            self._version += 1

    def add_middleware(
        self,
        middleware: Any,
        *,
        role: str | Iterable[str] | None = None,
        before: str | None = None,
        after: str | None = None,
        name: str | None = None,
    ) -> None:
        if before is not None and after is not None:
            raise ConfigError("give before= or after=, not both")
        roles = None if role is None else frozenset([role] if isinstance(role, str) else role)
        placement = _Placement(as_middleware(middleware, name), roles, before, after)
        with self._lock:
            self._placements.append(placement)
            self._version += 1

    def remove_middleware(self, name: str) -> None:
        with self._lock:
            kept = [p for p in self._placements if p.middleware.name != name]
            if len(kept) == len(self._placements):
                raise ConfigError(f"no middleware named {name!r} was added with add_middleware")
            self._placements = kept
            self._version += 1

    # -- resolution and building -----------------------------------------------------------
    def resolve(
        self,
        role: str,
        overrides: RoleConfig | None = None,
        environment: Environment | None = None,
        *,
        merged_config: RoleConfig | None = None,
    ) -> ResolvedRole:
        """Merge a role's config (and per-`get_llm` overrides) with the environment and defaults."""
        environment = environment or read_environment(role)
        config = merged_config if merged_config is not None else self.config(role)
        if overrides is not None:
            config = config.merged(overrides)
        if environment.cache_mode is not None and environment.cache_mode not in CACHE_MODES:
            raise ConfigError(f"MYOPTO_CACHE must be one of {CACHE_MODES}, got {environment.cache_mode!r}")
        if config.backend:
            backend, backend_source = config.backend, "config"
        elif environment.default_backend:
            backend, backend_source = canonical_backend_name(environment.default_backend), "TRACE_DEFAULT_LLM_BACKEND"
        else:
            backend, backend_source = DEFAULT_BACKEND, "default"
        defaults = environment.backend_defaults(backend)
        if config.model:
            model, model_source = config.model, "config"
        elif environment.role_model:
            model, model_source = environment.role_model, role_variable(role)
        elif defaults.get("model"):
            model, model_source = defaults["model"], f"{backend} default"
        else:
            raise ConfigError(
                f"role {role!r} has no model: set one with set_role_config({role!r}, model=...), "
                f"set_role_models({role}=...), or the {role_variable(role)} environment variable"
                + (" (or TRACE_CUSTOMLLM_MODEL)" if backend == "CustomLLM" else "")
            )
        cls = backend_class(backend)
        options = {key: value for key, value in defaults.items() if key != "model" and key in cls.option_names}
        options.update(config.options)
        if config.api_key and "api_key" in cls.option_names:
            options["api_key"] = config.api_key
        register_secrets_in(options)  # keys from the environment's defaults are masked too
        if options.get("base_url") is not None:
            check_base_url(options["base_url"], role)
        unknown = sorted(set(options) - cls.option_names)
        if unknown:
            raise ConfigError(
                f"role {role!r}: backend {backend} does not take option(s) {unknown}; it takes "
                f"{sorted(cls.option_names)} and generation parameters such as temperature. "
                f"If an earlier call set them, clear_role_config({role!r}) starts over"
            )
        cache_location, limits_url, namespace, lease_seconds = _shared_state(config, environment)
        if config.max_cost_usd is not None and config.pricing is None and not cls.knows_price(model):
            raise ConfigError(
                f"role {role!r} has max_cost_usd but the price of model {model!r} is unknown: a budget that "
                f"cannot be measured is no budget. Give set_role_config({role!r}, pricing={{'input': ..., "
                "'output': ...}) in USD per million tokens"
            )
        return ResolvedRole(
            role=role,
            backend=backend,
            model=model,
            params=config.params,
            options=MappingProxyType(options),
            middleware=config.middleware,
            structured_output=config.structured_output or "auto",
            cache=config.cache or environment.cache_mode or "on",
            cache_location=cache_location,
            retry=config.retry,
            reasks=config.reasks if config.reasks is not None else 1,
            pricing=config.pricing,
            namespace=namespace,
            lease_seconds=lease_seconds,
            limits_url=limits_url,
            rpm=config.rpm,
            tpm=config.tpm,
            max_cost_usd=config.max_cost_usd,
            # the role's max_pause, else MYOPTO_MAX_PAUSE_SECONDS (in the Environment, so a change
            # rebuilds the chain), else the default
            max_pause=pause_cap(config.max_pause),
            source=MappingProxyType({"backend": backend_source, "model": model_source}),
        )

    def build(self, resolved: ResolvedRole) -> Pipeline:
        """The role's chain: the default middleware list with the user's middleware in place."""
        backend = backend_class(resolved.backend)(**resolved.options)
        _tracing_from_environment()
        # The order a request travels, outermost first (DESIGN.md, "Chain order and why"):
        # logging and tracing see every call as the caller saw it, hit or miss, answer or final
        # error (tracing's span is current below it, so retry's attempts land on it as events);
        # usage outside the user's middleware and the cache, so it sees every call, cached or not;
        # the user's slot; structured output shapes the request before anything keys or sends it;
        # the cache keys the request as it will be sent, and a hit never reaches retry or the
        # backend; retry wraps each attempt; limits sits next to the backend, so every request
        # actually sent (each retry too) counts against rates and budgets, and no hit does.
        chain: list[Any] = [
            Logging(),
            Tracing(provider_name=backend.provider_name),
            Usage(pricing=resolved.pricing),
            USER_SLOT,
            StructuredOutput(
                json_schema=backend.supports_json_schema,
                json_object=backend.supports_json_object,
                instruct=getattr(backend, "wants_json_instruction", False),
                mode=resolved.structured_output,
                reasks=resolved.reasks,
            ),
            Cache(
                open_store(resolved.cache_location, namespace=resolved.namespace, lease_seconds=resolved.lease_seconds),
                mode=resolved.cache,
            ),
            Retry(**resolved.retry, max_pause=resolved.max_pause),
            Limits(
                limiter_for(resolved.limits_url, resolved.namespace),
                rpm=resolved.rpm,
                tpm=resolved.tpm,
                max_cost_usd=resolved.max_cost_usd,
                role=resolved.role,
                pricing=resolved.pricing,
                price_known=backend.knows_price,
                prepare=backend.prepare,
                max_pause=resolved.max_pause,
            ),
        ]
        slot = chain.index(USER_SLOT)
        placed = [p for p in self._placements if p.roles is None or resolved.role in p.roles]
        in_slot = [p.middleware for p in placed if p.before is None and p.after is None]
        chain[slot : slot + 1] = [*in_slot, *resolved.middleware]
        pipeline = Pipeline(backend, chain)
        for placement in placed:
            if placement.before is not None:
                pipeline = pipeline.insert(placement.middleware, before=placement.before)
            elif placement.after is not None:
                pipeline = pipeline.insert(placement.middleware, after=placement.after)
        return pipeline

    def chain(self, role: str, overrides: RoleConfig | None = None) -> tuple[ResolvedRole, Pipeline]:
        """The role's resolved config and chain, rebuilt only when its config or environment changed."""
        environment = read_environment(role)
        if overrides is None:
            cached = self._chains.get(role)
            if (
                cached is not None
                and cached[0] == self._version
                and (cached[1] is environment or cached[1] == environment)
            ):
                return cached[2], cached[3]
        with self._lock:
            version = self._version
            resolved = self.resolve(role, overrides, environment)
            if overrides is None:
                cached = self._chains.get(role)
                if cached is not None and cached[2] == resolved and cached[0] == version:
                    return cached[2], cached[3]
            pipeline = self.build(resolved)
            if overrides is None:
                self._chains[role] = (version, environment, resolved, pipeline)
            return resolved, pipeline

    @property
    def version(self) -> int:
        return self._version


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


def _tracing_from_environment() -> None:
    """`MYOPTO_TRACING=otlp` sets up the OTLP exporter once, when the first chain is built."""
    setting = tracing_setting()
    if setting is None or setting in ("0", "off", "false", "no"):
        return
    if setting != "otlp":
        raise ConfigError(f"MYOPTO_TRACING must be 'otlp' (or unset), got {setting!r}")
    from myopto.tracing import configure_tracing

    configure_tracing()


def _check_cache_dir(value: Any) -> str | None:
    """A cache directory is a path (str or os.PathLike), not a number or an empty string."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"cache_dir must be a directory path (a str or pathlib.Path), got {value!r}")
    return value


def _check_backend_options(options: Mapping[str, Any]) -> None:
    """Options several backends share are checked when set, not when the first call fails."""
    if options.get("timeout") is not None:
        _positive(options["timeout"], "timeout (seconds)")
    max_retries = options.get("max_retries")
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
    for name in ("extra", "extra_headers"):
        if name in options and not isinstance(options[name], Mapping):
            raise ConfigError(f"{name} must be a dict, got {type(options[name]).__name__}")


def _positive(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _shared_state(config: RoleConfig, environment: Environment) -> tuple[str, str | None, str, float]:
    """Where the role's cache and limits live: (cache directory or Redis URL, limits Redis URL or
    None, Redis key namespace, lease seconds). Explicit config wins over the environment; the
    limits follow a Redis cache unless told otherwise."""
    if config.cache_url or config.cache_dir:
        cache_location = config.cache_url or str(config.cache_dir)
    elif environment.cache_url:
        cache_location = check_url(environment.cache_url, what="MYOPTO_CACHE_URL")
    else:
        cache_location = str(default_cache_dir())
    limits_url = config.limits_url or environment.limits_url
    if limits_url is None and is_redis_url(cache_location):
        limits_url = cache_location
    elif limits_url is not None:
        check_url(limits_url, what="MYOPTO_LIMITS_URL")
    namespace = environment.cache_namespace or "myopto"
    if any(character in namespace for character in "{}* "):
        raise ConfigError(f"MYOPTO_CACHE_NAMESPACE must not contain braces, '*' or spaces, got {namespace!r}")
    try:
        lease_seconds = float(environment.lease_seconds or 10)
    except ValueError:
        lease_seconds = 0.0
    if not 0.1 <= lease_seconds <= 3600:
        raise ConfigError(f"MYOPTO_CACHE_LEASE_SECONDS must be 0.1-3600 seconds, got {environment.lease_seconds!r}")
    return cache_location, limits_url, namespace, lease_seconds


def _plain_value(value: Any) -> Any:
    return {key: _plain_value(item) for key, item in value.items()} if isinstance(value, Mapping) else value


def check_role(role: Any) -> str:
    if not isinstance(role, str) or not role.strip():
        raise ConfigError(f"a role is a non-empty string such as 'executor', got {role!r}")
    return role


ROUTER = Router()


def set_role_models(
    executor: str | None = None,
    optimizer: str | None = None,
    metaoptimizer: str | None = None,
    backend: str | None = None,
    key: str | None = None,
    **roles: str,
) -> None:
    """Set the model of one or more roles; `backend` and `key` (API key) apply to the roles named here.

    Any role name works as a keyword: `set_role_models(critic="gpt-4o-mini")`.
    """
    named = {"executor": executor, "optimizer": optimizer, "metaoptimizer": metaoptimizer, **roles}
    named = {role: model for role, model in named.items() if model is not None}
    if not named:
        raise ConfigError("name at least one role, e.g. set_role_models(executor='gpt-4o-mini')")
    ROUTER.configure(
        {role: RoleConfig.from_options(backend=backend, model=model, api_key=key) for role, model in named.items()}
    )


def set_role_config(role: str, backend: str | None = None, model: str | None = None, **options: Any) -> None:
    """Configure one role in detail; fields not given keep their earlier value.

    Options: generation parameters (temperature, max_tokens, ...), backend options (base_url,
    api_key, timeout, device, ...), `middleware=[fn, ...]` (the role's own middleware, in the user
    slot), `structured_output="auto" | "native" | "prompt"`. Checked on the spot.
    """
    ROUTER.configure({role: RoleConfig.from_options(backend=backend, model=model, **options)})


def clear_role_config(role: str | None = None) -> None:
    """Forget one role's config, or every role's config and added middleware when `role` is None."""
    ROUTER.clear(role)


def add_middleware(
    middleware: Any,
    *,
    role: str | Iterable[str] | None = None,
    before: str | None = None,
    after: str | None = None,
    name: str | None = None,
) -> None:
    """Insert a middleware into every role's chain (or only `role`'s), in the user slot or
    before/after a named middleware such as "structured_output"."""
    ROUTER.add_middleware(middleware, role=role, before=before, after=after, name=name)


def remove_middleware(name: str) -> None:
    """Take out a middleware added with `add_middleware`."""
    ROUTER.remove_middleware(name)


def overrides_from(**options: Any) -> RoleConfig | None:
    """A `RoleConfig` from `get_llm` keyword overrides, or None when there are none."""
    given = {key: value for key, value in options.items() if value is not None}
    return RoleConfig.from_options(**given) if given else None
