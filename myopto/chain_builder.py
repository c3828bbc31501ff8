"""The chain builder: a role's `Pipeline`, built from its `ResolvedRole` and the added middleware.

The default chain is written out once, in `build_chain`, in the order a request travels; the
user's middleware goes into its slot (or before/after a named middleware, as `add_middleware`
placed it). What several roles and workers share is opened here, from the resolved locations:
the cache store (a directory or Redis), the rate and budget limiter, and OpenTelemetry tracing
when `MYOPTO_TRACING=otlp` asks for it. Nothing is resolved or checked here beyond what the
middleware constructors check: the `ResolvedRole` already is.

A role with deployments ends in `Deployments` over a `DeploymentGroup` instead of retry, limits
and one backend: each deployment gets a chain of its own (retry, cooldown, limits, its backend;
the cache too when the deployment is part of the cache key), built here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

from myopto.backends import backend_class
from myopto.cooldowns import cooldowns_for
from myopto.errors import ConfigError
from myopto.limiter import limiter_for
from myopto.middleware.cache import Cache
from myopto.middleware.deployments import Cooldown, DeploymentGroup, DeploymentLimiter, Deployments
from myopto.middleware.limits import Limits
from myopto.middleware.logging import Logging
from myopto.middleware.retry import Retry
from myopto.middleware.structured_output import StructuredOutput
from myopto.middleware.tracing import Tracing
from myopto.middleware.usage import Usage
from myopto.pipeline import Middleware, Pipeline
from myopto.resolution import ResolvedDeployment, ResolvedRole
from myopto.routing import Deployment, strategy_for
from myopto.settings import tracing_setting
from myopto.stores import open_store

USER_SLOT = "user"  # where a user's middleware goes unless placed before/after a named one


@dataclasses.dataclass(frozen=True)
class Placement:
    """A middleware added with `add_middleware`: for which roles (None: all), and where."""

    middleware: Middleware
    roles: frozenset[str] | None
    before: str | None
    after: str | None


def build_chain(resolved: ResolvedRole, placements: Iterable[Placement] = ()) -> Pipeline:
    """The role's chain: the default middleware list with the user's middleware in place."""
    _tracing_from_environment()
    cache = Cache(
        open_store(resolved.cache_location, namespace=resolved.namespace, lease_seconds=resolved.lease_seconds),
        mode=resolved.cache,
    )
    backend: Any
    if resolved.deployments:
        backend, below_cache = _deployments(resolved, cache)
        in_key = resolved.routing is not None and resolved.routing.deployment_in_key
        # with the deployment in the key, the cache sits in each deployment's own chain
        bottom = below_cache if in_key else [cache, *below_cache]
    else:
        backend = backend_class(resolved.backend)(**resolved.options)
        bottom = [cache, Retry(**resolved.retry, max_pause=resolved.max_pause), _limits(resolved, backend)]
    # The order a request travels, outermost first (DESIGN.md, "Chain order and why"):
    # logging and tracing see every call as the caller saw it, hit or miss, answer or final
    # error (tracing's span is current below it, so retry's attempts land on it as events);
    # usage outside the user's middleware and the cache, so it sees every call, cached or not;
    # the user's slot; structured output shapes the request before anything keys or sends it;
    # the cache keys the request as it will be sent, and a hit never reaches retry or the
    # backend; retry wraps each attempt; limits sits next to the backend, so every request
    # actually sent (each retry too) counts against rates and budgets, and no hit does. With
    # deployments, routing takes the place of retry and limits, which each deployment has of its
    # own below it: the key stays the role's request, the rates and pauses the deployment's.
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
        *bottom,
    ]
    slot = chain.index(USER_SLOT)
    placed = [p for p in placements if p.roles is None or resolved.role in p.roles]
    in_slot = [p.middleware for p in placed if p.before is None and p.after is None]
    chain[slot : slot + 1] = [*in_slot, *resolved.middleware]
    pipeline = Pipeline(backend, chain)
    for placement in placed:
        if placement.before is not None:
            pipeline = pipeline.insert(placement.middleware, before=placement.before)
        elif placement.after is not None:
            pipeline = pipeline.insert(placement.middleware, after=placement.after)
    return pipeline


def _limits(
    resolved: ResolvedRole, backend: Any, deployment: ResolvedDeployment | None = None, key: str | None = None
) -> Limits:
    """The limits of the role's backend, or of one of its deployments (rates and pauses of its
    own, the role's budget)."""
    limiter: Any = limiter_for(resolved.limits_url, resolved.namespace)
    if key is not None:
        limiter = DeploymentLimiter(limiter, key)
    source = deployment or resolved
    return Limits(
        limiter,
        rpm=source.rpm,
        tpm=source.tpm,
        max_cost_usd=resolved.max_cost_usd,
        role=resolved.role,
        pricing=resolved.pricing,
        price_known=backend.knows_price,
        prepare=backend.prepare,
        max_pause=resolved.max_pause,
    )


# Options that do not change where a deployment's calls go or whose quota they spend.
_NOT_IDENTITY = frozenset({"timeout", "max_retries"})


def _deployment_key(deployment: ResolvedDeployment, endpoint: str | None) -> str:
    """A deployment's name in shared state (rates, pauses, cooldowns, calls in flight): a hash of
    its backend, endpoint, model and credentials, so two roles on one deployment share them and
    two keys at one endpoint do not; the credentials themselves are never stored."""
    identity = sorted((name, repr(value)) for name, value in deployment.options.items() if name not in _NOT_IDENTITY)
    text = repr((deployment.backend, endpoint, deployment.model, identity))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _deployments(resolved: ResolvedRole, cache: Cache) -> tuple[DeploymentGroup, list[Any]]:
    """The group terminal and the `Deployments` middleware of a role with deployments, each
    deployment with its own chain: (the cache, when the deployment is in the key), retry,
    cooldown, limits, its backend."""
    routing = resolved.routing
    assert routing is not None  # resolved with its deployments
    state = cooldowns_for(resolved.limits_url, resolved.namespace)
    built = []
    for deployment in resolved.deployments:
        backend = backend_class(deployment.backend)(**deployment.options)
        endpoint = backend.endpoint_for(deployment.model)
        key = _deployment_key(deployment, endpoint)
        chain = [
            *([cache] if routing.deployment_in_key else []),
            Retry(**deployment.retry, max_pause=resolved.max_pause),
            Cooldown(
                state,
                key,
                deployment.name,
                allowed_fails=routing.allowed_fails,
                cooldown=routing.cooldown,
                max_pause=resolved.max_pause,
            ),
            _limits(resolved, backend, deployment, key),
        ]
        built.append(
            Deployment(
                name=deployment.name,
                key=key,
                backend=deployment.backend,
                model=deployment.model,
                endpoint=endpoint,
                weight=deployment.weight,
                context_window=deployment.context_window,
                timeout=deployment.options.get("timeout"),
                pipeline=Pipeline(backend, chain),
            )
        )
    group = DeploymentGroup(resolved.role, resolved.model, built)
    middleware = Deployments(
        group,
        strategy=strategy_for(routing.strategy),
        state=state,
        when_all_cooling=routing.when_all_cooling,
        fallbacks=routing.fallbacks,
        context_window_fallbacks=routing.context_window_fallbacks,
        deadline=Retry(**resolved.retry).deadline,
        cache_misses_move_on=routing.deployment_in_key,
    )
    return group, [middleware]


def _tracing_from_environment() -> None:
    """`MYOPTO_TRACING=otlp` sets up the OTLP exporter once, when the first chain is built."""
    setting = tracing_setting()
    if setting is None or setting in ("0", "off", "false", "no"):
        return
    if setting != "otlp":
        raise ConfigError(f"MYOPTO_TRACING must be 'otlp' (or unset), got {setting!r}")
    from myopto.tracing import configure_tracing

    configure_tracing()
