"""`RoleConfig`: what a user set for one role, checked when it is set.

`RoleConfig.from_options` sorts the keyword options of `set_role_config` / `get_llm` into
generation params, backend options and router settings, and refuses a bad value on the spot
(before anything is stored or sent) with a `ConfigError` that says what to fix. Fields left None
fall back to the environment and the defaults later, in `myopto.resolution`. Secrets given here
(an API key, keys in headers or URLs) are registered for masking and never shown by the repr.
The option checks the resolution reuses (`check_base_url`, `check_role`) live here too.

A role may list several deployments (`deployments=[{...}, ...]`, each a `DeploymentConfig`: a
backend and model at one endpoint with its own key, weight and limits) with the routing settings
that spread calls over them (`routing`, `allowed_fails`, `cooldown`, `when_all_cooling`,
`fallbacks`, `context_window_fallbacks`, `deployment_in_key`); each is checked here, and how they
fit together (names, loops, backends) when the role is resolved.
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
from myopto.limiter import LONGEST_PAUSE_SECONDS, pause_cap
from myopto.logs import redact_options, register_secret, register_secrets_in
from myopto.middleware.cache import MODES as CACHE_MODES
from myopto.middleware.retry import Retry
from myopto.middleware.structured_output import MODES, StructuredOutput
from myopto.params import GENERATION_PARAMS, check_params
from myopto.pipeline import Middleware, as_middleware
from myopto.pricing import check_pricing
from myopto.redis_connection import check_url
from myopto.routing import STRATEGIES

# Role options that configure the retry middleware -> its constructor's names.
RETRY_OPTIONS = {
    "retries": "retries",
    "deadline": "deadline",
    "retry_backoff": "backoff",
    "retry_max_wait": "max_wait",
}
_FROZEN_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Role options that set how calls are spread over the role's deployments.
ROUTING_OPTIONS = (
    "routing",
    "allowed_fails",
    "cooldown",
    "when_all_cooling",
    "fallbacks",
    "context_window_fallbacks",
    "deployment_in_key",
)
WHEN_ALL_COOLING = ("wait", "fail")


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
    deployments: tuple[DeploymentConfig, ...] = ()
    routing: str | None = None
    allowed_fails: int | None = None
    cooldown: float | None = None
    when_all_cooling: str | None = None
    fallbacks: Mapping[str, tuple[str, ...]] | None = None
    context_window_fallbacks: Mapping[str, tuple[str, ...]] | None = None
    deployment_in_key: bool | None = None

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
        retry = _retry_options(options)
        deployments = options.pop("deployments", None)
        routing = _routing_options(options)
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
            deployments=() if deployments is None else deployments_from(deployments),
            **routing,
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
            deployments=update.deployments or self.deployments,
            **{
                name: getattr(update, name) if getattr(update, name) is not None else getattr(self, name)
                for name in ROUTING_OPTIONS
            },
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
class DeploymentConfig:
    """One deployment of a role, as set: a backend and model at one endpoint, with its own key,
    weight, rate limits, retries and context window. Fields left None fall back to the role's."""

    name: str
    model: str
    backend: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    options: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _FROZEN_EMPTY)
    weight: float | None = None
    rpm: float | None = None
    tpm: float | None = None
    retry: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _FROZEN_EMPTY)
    context_window: int | None = None

    def shown(self) -> dict[str, Any]:
        """The deployment fit to show: set fields only, no key, credentials in options masked."""
        fields = {
            field.name: _plain_value(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.repr and getattr(self, field.name) not in (None, _FROZEN_EMPTY)
        }
        shown: dict[str, Any] = redact_options(fields)
        return shown

    def __repr__(self) -> str:
        return f"DeploymentConfig({', '.join(f'{key}={value!r}' for key, value in self.shown().items())})"


_DEPLOYMENT_EXAMPLE = (
    "[{'backend': 'CustomLLM', 'model': 'm', 'base_url': 'http://host-a:8000/v1', 'weight': 3}, "
    "{'backend': 'CustomLLM', 'model': 'm', 'base_url': 'http://host-b:8000/v1', 'weight': 1}]"
)


def deployments_from(value: Any) -> tuple[DeploymentConfig, ...]:
    """The checked deployments of `set_role_config(role, deployments=[...])`: a non-empty list of
    dicts, each with a `model`; names default to the model (numbered when models repeat)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(
            f"deployments must be a list of dicts, one per deployment, such as {_DEPLOYMENT_EXAMPLE}; "
            f"got {type(value).__name__}"
        )
    items = list(value)
    if not items:
        raise ConfigError(
            f"deployments is empty: list at least one, such as {_DEPLOYMENT_EXAMPLE}, or leave "
            "deployments out for a role with one model"
        )
    parsed = [_deployment(index, item) for index, item in enumerate(items)]
    models = [model for _, model, _ in parsed]
    named: list[DeploymentConfig] = []
    for index, (name, model, fields) in enumerate(parsed):
        if name is None:
            name = model if models.count(model) == 1 else f"{model}#{models[: index + 1].count(model)}"
        named.append(DeploymentConfig(name=name, model=model, **fields))
    names = [deployment.name for deployment in named]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"two deployments are named {repeated[0]!r}: give each a distinct 'name'")
    return tuple(named)


def _deployment(index: int, item: Any) -> tuple[str | None, str, dict[str, Any]]:
    """One deployment dict, checked: (its name or None, its model, the other fields)."""
    where = f"deployments[{index}]"
    if not isinstance(item, Mapping):
        raise ConfigError(
            f"{where} must be a dict such as {{'model': 'm', 'base_url': ...}}, got {type(item).__name__}"
        )
    options = {key: value for key, value in item.items() if value is not None}
    name = options.pop("name", None)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{where}: name must be a non-empty string, got {name!r}")
    model = options.pop("model", None)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"{where} needs a model: a non-empty string such as 'gpt-4o-mini', got {model!r}")
    backend = options.pop("backend", None)
    api_key = options.pop("api_key", None) or options.pop("key", None)
    register_secret(api_key)
    register_secrets_in(options)
    if "api_base" in options:  # LiteLLM's spelling of base_url
        api_base = options.pop("api_base")
        if options.setdefault("base_url", api_base) != api_base:
            raise ConfigError(f"{where} gives both api_base and base_url, and they differ: give one")
    params = sorted(key for key in options if key in GENERATION_PARAMS or key == "params")
    if params:
        raise ConfigError(
            f"{where} sets {params[0]}: generation parameters belong to the role, not to one deployment "
            "(they decide the answer, and the cache key is the role's); set them with set_role_config(role, ...)"
        )
    misplaced = sorted(key for key in options if key in ROUTING_OPTIONS or key == "deployments")
    if misplaced:
        raise ConfigError(f"{where} sets {misplaced[0]}, a setting of the role: give it to set_role_config(role, ...)")
    weight = options.pop("weight", None)
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf
    ):
        raise ConfigError(f"{where}: weight must be a finite number >= 0 (0: a fallback only), got {weight!r}")
    rpm, tpm = (positive(options.pop(key, None), f"{where}: {key}") for key in ("rpm", "tpm"))
    context_window = options.pop("context_window", None)
    if context_window is not None and (
        isinstance(context_window, bool) or not isinstance(context_window, int) or context_window < 1
    ):
        raise ConfigError(f"{where}: context_window must be a whole number of tokens > 0, got {context_window!r}")
    retry = _retry_options(options)
    check_backend_options(options)
    fields = {
        "backend": None if backend is None else canonical_backend_name(backend),
        "api_key": api_key,
        "options": MappingProxyType(options),
        "weight": None if weight is None else float(weight),
        "rpm": rpm,
        "tpm": tpm,
        "retry": MappingProxyType(retry),
        "context_window": context_window,
    }
    return name, model, fields


def _retry_options(options: dict[str, Any]) -> dict[str, Any]:
    """Take the retry options out of `options`, checked, under Retry's names."""
    retry = {name: options.pop(key) for key, name in RETRY_OPTIONS.items() if options.get(key) is not None}
    for key in RETRY_OPTIONS:
        options.pop(key, None)
    if retry:
        Retry(**retry)  # checks the values now
    return retry


def _routing_options(options: dict[str, Any]) -> dict[str, Any]:
    """Take the routing settings out of `options`, each checked on its own (how they fit the
    role's deployments is checked when the role is resolved)."""
    found = {key: options.pop(key) for key in ROUTING_OPTIONS if options.get(key) is not None}
    for key in ROUTING_OPTIONS:
        options.pop(key, None)
    routing = found.get("routing")
    if routing is not None:
        spelled = routing.strip().lower().replace("_", "-") if isinstance(routing, str) else routing
        if spelled not in STRATEGIES:
            raise ConfigError(
                f"routing must be one of {', '.join(map(repr, STRATEGIES))} (LiteLLM's 'simple-shuffle' is "
                f"'weighted', its 'latency-based-routing' is 'latency'), got {routing!r}"
            )
        found["routing"] = spelled
    allowed = found.get("allowed_fails")
    if allowed is not None and (isinstance(allowed, bool) or not isinstance(allowed, int) or allowed < 1):
        raise ConfigError(
            f"allowed_fails must be a whole number >= 1 (failures within a minute before a deployment "
            f"cools down), got {allowed!r}"
        )
    cooldown = found.get("cooldown")
    if cooldown is not None:
        if not _is_number(cooldown) or not 0 < cooldown <= LONGEST_PAUSE_SECONDS:  # also refuses NaN
            raise ConfigError(
                f"cooldown must be a number of seconds > 0 and at most {LONGEST_PAUSE_SECONDS:g} (a day): how "
                f"long a failing deployment is skipped; got {cooldown!r}"
            )
        found["cooldown"] = float(cooldown)
    when = found.get("when_all_cooling")
    if when is not None and when not in WHEN_ALL_COOLING:
        raise ConfigError(
            f"when_all_cooling must be 'wait' (for the first deployment back, within the call's deadline) "
            f"or 'fail' (at once, with DeploymentsUnavailable), got {when!r}"
        )
    for option in ("fallbacks", "context_window_fallbacks"):
        if option in found:
            found[option] = _fallback_map(found[option], option)
    in_key = found.get("deployment_in_key")
    if in_key is not None and not isinstance(in_key, bool):
        raise ConfigError(f"deployment_in_key must be True or False, got {in_key!r}")
    return found


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _fallback_map(value: Any, option: str) -> Mapping[str, tuple[str, ...]]:
    """`{deployment: [deployments to try after it], ...}` (or LiteLLM's list of one-key dicts), checked."""
    example = f"{option}={{'small': ['large']}}: after 'small', try 'large'"
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)):
        merged: dict[Any, Any] = {}
        for item in value:
            if not isinstance(item, Mapping):
                raise ConfigError(
                    f"{option} maps deployment names to the names to try after them: {example}. To fall back "
                    "from one model to others, list them all as deployments=[{'model': ...}, {'model': ...}] "
                    "with routing='fallback-order'"
                )
            merged.update(item)
        value = merged
    if not isinstance(value, Mapping):
        raise ConfigError(f"{option} maps deployment names to the names to try after them: {example}")
    checked: dict[str, tuple[str, ...]] = {}
    for source, targets in value.items():
        if isinstance(targets, str):
            targets = [targets]
        if (
            not isinstance(source, str)
            or not isinstance(targets, Iterable)
            or not all(isinstance(target, str) for target in targets)
        ):
            raise ConfigError(
                f"{option} maps deployment names to lists of names: {example}; got {source!r}: {targets!r}"
            )
        checked[source] = tuple(targets)
    return MappingProxyType(checked)


def check_role(role: Any) -> str:
    """A role is a non-empty string; return it, or `ConfigError`."""
    if not isinstance(role, str) or not role.strip():
        raise ConfigError(f"a role is a non-empty string such as 'executor', got {role!r}")
    return role


def check_base_url(url: Any, role: str, deployment: str | None = None) -> None:
    """A backend's `base_url` must be an http(s) URL with a host; caught here, not after retries."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # such as a broken IPv6 address
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"role {role!r}{'' if deployment is None else f', deployment {deployment!r}'}: base_url must be an "
            f"http(s) URL such as http://localhost:8000/v1, got {url!r} "
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
    if isinstance(value, Mapping):
        return {key: _plain_value(item) for key, item in value.items()}
    if isinstance(value, tuple) and value and all(isinstance(item, DeploymentConfig) for item in value):
        return [item.shown() for item in value]
    return value
