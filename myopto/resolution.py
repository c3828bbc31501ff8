"""Resolution: a role's explicit config, the environment and the defaults, merged into one checked,
immutable `ResolvedRole` that the role's chain is built from.

For each role:
- backend: the role's config > `TRACE_DEFAULT_LLM_BACKEND` > LiteLLM;
- model: the role's config > `TRACE_LLM_MODEL_<ROLE>` > the backend's default
  (`TRACE_LITELLM_MODEL` or gpt-4o; `TRACE_LOCALSLM_MODEL` or Qwen/Qwen2-0.5B-Instruct;
  `TRACE_CUSTOMLLM_MODEL`, with `TRACE_CUSTOMLLM_URL` and `TRACE_CUSTOMLLM_API_KEY`);
- backend options: the role's config > the backend's environment defaults; others are refused;
- cache and limits: the role's `cache_url` / `cache_dir` > `MYOPTO_CACHE_URL` > `MYOPTO_CACHE_DIR`
  (or the user cache dir); limits on `limits_url` > `MYOPTO_LIMITS_URL` > a Redis cache's URL.

`resolve` is a plain function of its arguments: the environment comes in as a `settings.Environment`
(read by `myopto.settings`, the one module that reads variables), so the same inputs give the same
`ResolvedRole` or the same `ConfigError`, before anything is built or sent. One value comes from
the process's environment instead: the default pause cap (`MYOPTO_MAX_PAUSE_SECONDS`, through
`limiter.pause_cap`) when the role sets no `max_pause`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from myopto.backends import backend_class, canonical_backend_name
from myopto.errors import ConfigError
from myopto.limiter import pause_cap
from myopto.logs import register_secrets_in
from myopto.middleware.cache import MODES as CACHE_MODES
from myopto.pipeline import Middleware
from myopto.redis_connection import check_url, is_redis_url
from myopto.role_config import RoleConfig, check_base_url
from myopto.settings import DEFAULT_BACKEND, Environment, cache_dir_from, read_environment, role_variable


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


def resolve(
    role: str,
    config: RoleConfig,
    overrides: RoleConfig | None = None,
    environment: Environment | None = None,
) -> ResolvedRole:
    """Merge a role's config (and per-`get_llm` overrides laid over it) with the environment
    (`read_environment(role)` when not given) and the defaults; `ConfigError` says what to fix."""
    environment = environment or read_environment(role)
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
    options = _backend_options(role, backend, cls.option_names, defaults, config)
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


def _backend_options(
    role: str, backend: str, option_names: frozenset[str], defaults: Mapping[str, str], config: RoleConfig
) -> dict[str, Any]:
    """The backend's constructor options: its environment defaults, the role's options over them;
    an option the backend does not take is refused, naming those it does."""
    options: dict[str, Any] = {key: value for key, value in defaults.items() if key != "model" and key in option_names}
    options.update(config.options)
    if config.api_key and "api_key" in option_names:
        options["api_key"] = config.api_key
    register_secrets_in(options)  # keys from the environment's defaults are masked too
    if options.get("base_url") is not None:
        check_base_url(options["base_url"], role)
    unknown = sorted(set(options) - option_names)
    if unknown:
        raise ConfigError(
            f"role {role!r}: backend {backend} does not take option(s) {unknown}; it takes "
            f"{sorted(option_names)} and generation parameters such as temperature. "
            f"If an earlier call set them, clear_role_config({role!r}) starts over"
        )
    return options


def _shared_state(config: RoleConfig, environment: Environment) -> tuple[str, str | None, str, float]:
    """Where the role's cache and limits live: (cache directory or Redis URL, limits Redis URL or
    None, Redis key namespace, lease seconds). Explicit config wins over the environment; the
    limits follow a Redis cache unless told otherwise."""
    if config.cache_url or config.cache_dir:
        cache_location = config.cache_url or str(config.cache_dir)
    elif environment.cache_url:
        cache_location = check_url(environment.cache_url, what="MYOPTO_CACHE_URL")
    else:
        cache_location = str(cache_dir_from(environment.cache_dir))
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
