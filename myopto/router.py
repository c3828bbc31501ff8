"""The role registry: each role's config, the middleware added with `add_middleware`, and each
role's chain, cached until a config, a placement or the role's environment changes.

The public functions (`set_role_models`, `set_role_config`, `clear_role_config`, `add_middleware`,
`remove_middleware`) change the registry; `Router.chain` hands a role's chain to its callers
(`myopto.client.RoleLLM`, `myopto roles`). The work is done a floor below: `myopto.role_config`
checks what a user sets, `myopto.resolution` merges it with the environment and the defaults into
a `ResolvedRole`, and `myopto.chain_builder` builds the `Pipeline` from that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from myopto.chain_builder import Placement, build_chain
from myopto.errors import ConfigError
from myopto.pipeline import Pipeline, as_middleware
from myopto.resolution import ResolvedRole, resolve
from myopto.role_config import RoleConfig as RoleConfig
from myopto.role_config import check_role
from myopto.settings import Environment, read_environment

DEFAULT_ROLES = ("executor", "optimizer", "metaoptimizer")


class Router:
    """Holds the role configs and added middleware, and builds (and caches) each role's chain. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._configs: dict[str, RoleConfig] = {}
        self._placements: list[Placement] = []
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
                resolve(role, merged[role])  # raises before anything is stored
            self._configs.update(merged)
            self._version += 1

    def config(self, role: str) -> RoleConfig:
        """The role's config as set (an empty `RoleConfig` for a role never configured)."""
        with self._lock:
            return self._configs.get(role, RoleConfig())

    def roles(self) -> list[str]:
        """The default roles, then every role configured since, in the order first set."""
        with self._lock:
            return list(dict.fromkeys([*DEFAULT_ROLES, *self._configs]))

    def clear(self, role: str | None = None) -> None:
        """Forget one role's config, or every config and added middleware when `role` is None."""
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
        """Place a middleware in the chains of `role` (None: every role); see `add_middleware`."""
        if before is not None and after is not None:
            raise ConfigError("give before= or after=, not both")
        roles = None if role is None else frozenset([role] if isinstance(role, str) else role)
        placement = Placement(as_middleware(middleware, name), roles, before, after)
        with self._lock:
            self._placements.append(placement)
            self._version += 1

    def remove_middleware(self, name: str) -> None:
        """Take out every middleware named `name` that `add_middleware` placed."""
        with self._lock:
            kept = [p for p in self._placements if p.middleware.name != name]
            if len(kept) == len(self._placements):
                raise ConfigError(f"no middleware named {name!r} was added with add_middleware")
            self._placements = kept
            self._version += 1

    # -- resolution and building (done by myopto.resolution and myopto.chain_builder) -------
    def resolve(
        self,
        role: str,
        overrides: RoleConfig | None = None,
        environment: Environment | None = None,
        *,
        merged_config: RoleConfig | None = None,
    ) -> ResolvedRole:
        """The role's config (or `merged_config`), with per-`get_llm` overrides, resolved against
        the environment and the defaults."""
        config = merged_config if merged_config is not None else self.config(role)
        return resolve(role, config, overrides, environment)

    def build(self, resolved: ResolvedRole) -> Pipeline:
        """The chain of a resolved role, with the middleware placed for that role."""
        with self._lock:
            placements = tuple(self._placements)
        return build_chain(resolved, placements)

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
        """Bumped by every change of a config or a placement: a chain built at another is stale."""
        return self._version


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
