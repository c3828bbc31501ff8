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

A role with deployments resolves each one as a role of its own model (its backend > the role's >
the environment's; the role's options, key, retries and rate limits under its own), and refuses
what cannot work together: a fallback that names no deployment or leads back to itself, chat
and non-chat models side by side, the same deployment twice. The role's requests then name the
group: backend `deployments`, the role's `model` (else the deployments' models, sorted, joined
by `|`), and the group's endpoints (`myopto.middleware.deployments.DeploymentGroup`).
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
from myopto.pricing import price_map
from myopto.redis_connection import check_url, is_redis_url
from myopto.role_config import ROUTING_OPTIONS, DeploymentConfig, RoleConfig, check_base_url
from myopto.routing import check_fallbacks
from myopto.settings import DEFAULT_BACKEND, Environment, cache_dir_from, read_environment, role_variable

GROUP_BACKEND = "deployments"  # the backend a role with deployments names in its requests
# Modes of LiteLLM's model map that answer chat completions; any other (embedding, rerank,
# image_generation, ...) does not.
CHAT_MODES = frozenset({"chat", "responses"})


@dataclasses.dataclass(frozen=True)
class ResolvedDeployment:
    """One deployment of a role, resolved: its backend's constructor options and its own limits."""

    name: str
    backend: str
    model: str
    options: Mapping[str, Any] = dataclasses.field(repr=False)
    weight: float = 1.0
    rpm: float | None = None
    tpm: float | None = None
    retry: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    context_window: int | None = None  # tokens: as set, else as LiteLLM's model map knows it


@dataclasses.dataclass(frozen=True)
class RoutingSettings:
    """How a role spreads its calls over its deployments (see `myopto.routing`)."""

    strategy: str = "weighted"
    allowed_fails: int = 3  # failures within a minute ...
    cooldown: float = 30.0  # ... rest a deployment this many seconds
    when_all_cooling: str = "wait"  # or "fail"
    fallbacks: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    context_window_fallbacks: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    deployment_in_key: bool = False


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
    deployments: tuple[ResolvedDeployment, ...] = ()  # none: the role's one backend and model
    routing: RoutingSettings | None = None  # with deployments


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
    if config.deployments:
        return _resolve_group(role, config, environment)
    given = [name for name in ROUTING_OPTIONS if getattr(config, name) is not None]
    if given:
        raise ConfigError(
            f"role {role!r} sets {given[0]} but has no deployments: routing settings spread a role over "
            f"several deployments, set_role_config({role!r}, deployments=[{{...}}, {{...}}], {given[0]}=...)"
        )
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
    options = _backend_options(role, None, backend, cls.option_names, defaults, config.options, config.api_key)
    settings = _role_settings(config, environment)
    _check_budget(role, config, cls, model)
    return ResolvedRole(
        role=role,
        backend=backend,
        model=model,
        options=MappingProxyType(options),
        source=MappingProxyType({"backend": backend_source, "model": model_source}),
        **settings,
    )


def _role_settings(config: RoleConfig, environment: Environment) -> dict[str, Any]:
    """The settings a role has whether it names one model or several deployments: its chain's
    middleware, cache, retries, pricing, shared state, rate limits and budget."""
    cache_location, limits_url, namespace, lease_seconds = _shared_state(config, environment)
    return {
        "params": config.params,
        "middleware": config.middleware,
        "structured_output": config.structured_output or "auto",
        "cache": config.cache or environment.cache_mode or "on",
        "cache_location": cache_location,
        "retry": config.retry,
        "reasks": config.reasks if config.reasks is not None else 1,
        "pricing": config.pricing,
        "namespace": namespace,
        "lease_seconds": lease_seconds,
        "limits_url": limits_url,
        "rpm": config.rpm,
        "tpm": config.tpm,
        "max_cost_usd": config.max_cost_usd,
        # the role's max_pause, else MYOPTO_MAX_PAUSE_SECONDS (in the Environment, so a change
        # rebuilds the chain), else the default
        "max_pause": pause_cap(config.max_pause),
    }


def _check_budget(role: str, config: RoleConfig, cls: Any, model: str, deployment: str | None = None) -> None:
    if config.max_cost_usd is not None and config.pricing is None and not cls.knows_price(model):
        where = f"role {role!r}" + ("" if deployment is None else f", deployment {deployment!r},")
        raise ConfigError(
            f"{where} has max_cost_usd but the price of model {model!r} is unknown: a budget that "
            f"cannot be measured is no budget. Give set_role_config({role!r}, pricing={{'input': ..., "
            "'output': ...}) in USD per million tokens"
        )


def _backend_options(
    role: str,
    deployment: str | None,
    backend: str,
    option_names: frozenset[str],
    defaults: Mapping[str, str],
    given: Mapping[str, Any],
    api_key: str | None,
) -> dict[str, Any]:
    """The backend's constructor options: its environment defaults, the given options over them;
    an option the backend does not take is refused, naming those it does."""
    options: dict[str, Any] = {key: value for key, value in defaults.items() if key != "model" and key in option_names}
    options.update(given)
    if api_key and "api_key" in option_names:
        options["api_key"] = api_key
    register_secrets_in(options)  # keys from the environment's defaults are masked too
    if options.get("base_url") is not None:
        check_base_url(options["base_url"], role, deployment)
    unknown = sorted(set(options) - option_names)
    if unknown:
        where = f"role {role!r}" + ("" if deployment is None else f", deployment {deployment!r}")
        raise ConfigError(
            f"{where}: backend {backend} does not take option(s) {unknown}; it takes "
            f"{sorted(option_names)} and generation parameters such as temperature. "
            f"If an earlier call set them, clear_role_config({role!r}) starts over"
        )
    return options


# -- a role with deployments -------------------------------------------------------------------


def _resolve_group(role: str, config: RoleConfig, environment: Environment) -> ResolvedRole:
    """`resolve` for a role with deployments: each deployment, the routing settings, and the group."""
    default_backend = config.backend or (
        canonical_backend_name(environment.default_backend) if environment.default_backend else DEFAULT_BACKEND
    )
    deployments = tuple(
        _resolve_deployment(role, config, deployment, default_backend, environment) for deployment in config.deployments
    )
    if all(given.weight is None for given in config.deployments) and all(d.rpm for d in deployments):
        # weighted by rate limit when every deployment has one and none has a weight
        deployments = tuple(dataclasses.replace(d, weight=d.rpm or 1.0) for d in deployments)
    _check_group(role, deployments)
    routing = _routing(role, config, deployments)
    models = sorted({deployment.model for deployment in deployments})
    return ResolvedRole(
        role=role,
        backend=GROUP_BACKEND,
        model=config.model or "|".join(models),
        options=MappingProxyType(dict(config.options)),
        source=MappingProxyType({"backend": "deployments", "model": "config" if config.model else "deployments"}),
        deployments=deployments,
        routing=routing,
        **_role_settings(config, environment),
    )


def _resolve_deployment(
    role: str, config: RoleConfig, deployment: DeploymentConfig, default_backend: str, environment: Environment
) -> ResolvedDeployment:
    """One deployment: its own settings over the role's, over the environment's defaults."""
    backend = deployment.backend or default_backend
    cls = backend_class(backend)
    options = _backend_options(
        role,
        deployment.name,
        backend,
        cls.option_names,
        environment.backend_defaults(backend),
        {**config.options, **deployment.options},
        deployment.api_key or config.api_key,
    )
    _check_budget(role, config, cls, deployment.model, deployment.name)
    rpm = deployment.rpm or config.rpm
    return ResolvedDeployment(
        name=deployment.name,
        backend=backend,
        model=deployment.model,
        options=MappingProxyType(options),
        weight=deployment.weight if deployment.weight is not None else 1.0,
        rpm=rpm,
        tpm=deployment.tpm or config.tpm,
        retry=MappingProxyType({**config.retry, **deployment.retry}),
        context_window=deployment.context_window or _known_window(deployment.model),
    )


def _map_entry(model: str) -> Mapping[str, Any] | None:
    """LiteLLM's model map row for `model` (with or without its provider prefix), or None."""
    models = price_map()
    for name in (model, model.split("/", 1)[-1]):
        entry = models.get(name)
        if isinstance(entry, Mapping):
            return entry
    return None


def _known_window(model: str) -> int | None:
    entry = _map_entry(model)
    window = entry.get("max_input_tokens") if entry is not None else None
    return window if isinstance(window, int) and window > 0 else None


def _check_group(role: str, deployments: tuple[ResolvedDeployment, ...]) -> None:
    """Deployments that cannot serve one role together: the same one twice, chat models beside
    models that do not chat, weight 0 for all."""
    seen: dict[tuple[str, str, str], str] = {}
    for deployment in deployments:
        identity = (deployment.backend, deployment.model, repr(sorted(deployment.options.items())))
        if identity in seen:
            raise ConfigError(
                f"role {role!r}: deployments {seen[identity]!r} and {deployment.name!r} are the same backend, "
                "model, endpoint and key; list each deployment once (a weight gives it a larger share)"
            )
        seen[identity] = deployment.name
    kinds = {deployment.name: _kind(deployment) for deployment in deployments}
    chat = [name for name, kind in kinds.items() if kind == "chat"]
    other = [f"{name} ({kind})" for name, kind in kinds.items() if kind != "chat"]
    if chat and other:
        raise ConfigError(
            f"role {role!r}: deployments mix chat models ({', '.join(chat)}) with models that do not chat "
            f"({', '.join(other)}); every deployment of a role must answer the same chat calls"
        )
    if all(deployment.weight <= 0 for deployment in deployments):
        raise ConfigError(
            f"role {role!r}: every deployment has weight 0 (a fallback only): give at least one a weight > 0"
        )


def _kind(deployment: ResolvedDeployment) -> str:
    """'chat', or the mode LiteLLM's model map gives a model that does not chat (embedding, ...)."""
    if deployment.backend == "LocalSLM":
        return "chat"
    entry = _map_entry(deployment.model)
    mode = entry.get("mode") if entry is not None else None
    return mode if isinstance(mode, str) and mode not in CHAT_MODES else "chat"


def _routing(role: str, config: RoleConfig, deployments: tuple[ResolvedDeployment, ...]) -> RoutingSettings:
    names = [deployment.name for deployment in deployments]
    fallbacks = config.fallbacks or MappingProxyType({})
    context_fallbacks = config.context_window_fallbacks or MappingProxyType({})
    check_fallbacks(fallbacks, names, "fallbacks", role)
    check_fallbacks(context_fallbacks, names, "context_window_fallbacks", role)
    windows = {deployment.name: deployment.context_window for deployment in deployments}
    for source, targets in context_fallbacks.items():
        for target in targets:
            smaller, larger = windows[source], windows[target]
            if smaller is not None and larger is not None and larger <= smaller:
                raise ConfigError(
                    f"role {role!r}: context_window_fallbacks sends {source!r} ({smaller} tokens) to "
                    f"{target!r}, whose context window ({larger} tokens) is no larger"
                )
    defaults = RoutingSettings()
    return RoutingSettings(
        strategy=config.routing or defaults.strategy,
        allowed_fails=config.allowed_fails or defaults.allowed_fails,
        cooldown=config.cooldown or defaults.cooldown,
        when_all_cooling=config.when_all_cooling or defaults.when_all_cooling,
        fallbacks=fallbacks,
        context_window_fallbacks=context_fallbacks,
        deployment_in_key=bool(config.deployment_in_key),
    )


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
