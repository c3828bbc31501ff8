"""The chain builder: a role's `Pipeline`, built from its `ResolvedRole` and the added middleware.

The default chain is written out once, in `build_chain`, in the order a request travels; the
user's middleware goes into its slot (or before/after a named middleware, as `add_middleware`
placed it). What several roles and workers share is opened here, from the resolved locations:
the cache store (a directory or Redis), the rate and budget limiter, and OpenTelemetry tracing
when `MYOPTO_TRACING=otlp` asks for it. Nothing is resolved or checked here beyond what the
middleware constructors check: the `ResolvedRole` already is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from myopto.backends import backend_class
from myopto.errors import ConfigError
from myopto.limiter import limiter_for
from myopto.middleware.cache import Cache
from myopto.middleware.limits import Limits
from myopto.middleware.logging import Logging
from myopto.middleware.retry import Retry
from myopto.middleware.structured_output import StructuredOutput
from myopto.middleware.tracing import Tracing
from myopto.middleware.usage import Usage
from myopto.pipeline import Middleware, Pipeline
from myopto.resolution import ResolvedRole
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


def _tracing_from_environment() -> None:
    """`MYOPTO_TRACING=otlp` sets up the OTLP exporter once, when the first chain is built."""
    setting = tracing_setting()
    if setting is None or setting in ("0", "off", "false", "no"):
        return
    if setting != "otlp":
        raise ConfigError(f"MYOPTO_TRACING must be 'otlp' (or unset), got {setting!r}")
    from myopto.tracing import configure_tracing

    configure_tracing()
