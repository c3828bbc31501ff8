"""`RoleLLM`: the callable a role hands out. Builds a `Request` and runs it down the role's chain.

It is also a drop-in for the LLM objects of Trace (trace-opt): Trace's optimisers call
`llm(messages=..., response_format=..., max_tokens=...)` (OptoPrime, OPRO) or
`llm.create(messages=..., n=..., temperature=...)` (OptoPrimeMulti, TextGrad), and
`AbstractModel` users read `llm.model(...)`, `llm.model_name` and `llm.reset_freq`: all are here,
all return the same `Response`.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from myopto.errors import InvalidRequest
from myopto.middleware.cache import MODES as CACHE_MODES
from myopto.output_format import normalize_response_format
from myopto.params import check_params
from myopto.pipeline import Pipeline
from myopto.request import Request, check_messages, is_json_data
from myopto.resolution import ResolvedRole
from myopto.response import Response
from myopto.role_config import RoleConfig, check_role
from myopto.router import ROUTER, Router, overrides_from
from myopto.runs import current_run
from myopto.settings import Environment, read_environment
from myopto.streaming import AsyncStream, Stream


class RoleLLM:
    """Calls one role's model: `llm(messages=[...], response_format=..., max_tokens=...)`.

    Returns a `Response` that reads like an OpenAI chat completion. The chain is looked up on
    each call, so a later `set_role_config` for this role takes effect on the next call.
    Accepts a plain string as the prompt: `llm("Hello")`.
    """

    def __init__(self, role: str = "executor", overrides: RoleConfig | None = None, *, router: Router = ROUTER) -> None:
        self.role = check_role(role)
        self._overrides = overrides
        self._router = router
        self._cache: tuple[int, Environment, ResolvedRole, Pipeline] | None = None
        self._chain()  # fail now, not on the first call, when the config cannot work

    def _chain(self) -> tuple[ResolvedRole, Pipeline]:
        if self._overrides is None:
            return self._router.chain(self.role)  # shared, cached by the router
        # this object's own chain: rebuilt when any config or the role's environment changes
        version, environment = self._router.version, read_environment(self.role)
        cached = self._cache
        if cached is not None and cached[0] == version and (cached[1] is environment or cached[1] == environment):
            return cached[2], cached[3]
        resolved, pipeline = self._router.chain(self.role, self._overrides)
        self._cache = (version, environment, resolved, pipeline)
        return resolved, pipeline

    @property
    def pipeline(self) -> Pipeline:
        """This role's chain as it stands now."""
        return self._chain()[1]

    @property
    def model(self) -> ModelName:
        """The role's model name; calling it calls the role, as Trace's `AbstractModel.model(...)`."""
        return ModelName(self._chain()[0].model, self)

    @property
    def model_name(self) -> str:
        """The role's model name (Trace's `LiteLLM` and `CustomLLM` spell it so)."""
        return self._chain()[0].model

    # Trace's `AbstractModel` rebuilds its client every `reset_freq` seconds; a role needs no
    # refresh (its chain is looked up on every call), so there is never one.
    reset_freq: None = None

    @property
    def backend(self) -> str:
        return self._chain()[0].backend

    def describe(self) -> str:
        resolved, pipeline = self._chain()
        return (
            f"role {self.role}: backend {resolved.backend} ({resolved.source['backend']}), "
            f"model {resolved.model} ({resolved.source['model']})\n{pipeline.describe()}"
        )

    def request(
        self,
        messages: Any = None,
        *,
        response_format: Any = None,
        model: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        cache: str | None = None,
        sample: Any = None,
        retries: int | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> Request:
        """The `Request` a call with these arguments would send down the chain (checked, not sent)."""
        metadata = _call_metadata(metadata, cache, sample, retries, deadline)
        return _build_request(self.role, self._chain(), messages, response_format, model, timeout, metadata, params)

    @overload
    def __call__(self, messages: Any = None, *, stream: Literal[False] = False, **options: Any) -> Response: ...
    @overload
    def __call__(self, messages: Any = None, *, stream: Literal[True], **options: Any) -> Stream: ...
    def __call__(
        self,
        messages: Any = None,
        *,
        response_format: Any = None,
        model: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        cache: str | None = None,
        sample: Any = None,
        retries: int | None = None,
        deadline: float | None = None,
        stream: bool = False,
        **params: Any,
    ) -> Response | Stream:
        metadata = _call_metadata(metadata, cache, sample, retries, deadline)
        chain = self._chain()
        request = _build_request(self.role, chain, messages, response_format, model, timeout, metadata, params)
        return Stream(chain[1], request) if stream else chain[1](request)

    def stream(self, messages: Any = None, **options: Any) -> Stream:
        """The call as a stream: iterate it for chunks as they come (`chunk.choices[0].delta.content`);
        `.response` is the assembled `Response`. Takes what a call takes; `llm(..., stream=True)`
        is the same."""
        return Stream(self._chain()[1], self.request(messages, **options))

    def astream(self, messages: Any = None, **options: Any) -> AsyncStream:
        """Async twin of `stream` (call it inside a running event loop): `async for chunk in ...`."""
        return AsyncStream(self._chain()[1].acall, self.request(messages, **options))

    def create(self, **config: Any) -> Response:
        """Trace's `AbstractModel.create(**config)`: the same call as `llm(**config)`.

        `config` holds what an OpenAI chat completion takes (`messages`, `model`, `n`,
        `temperature`, `max_tokens`, `response_format`, ...) and myopto's per-call options; with
        `stream=True` it returns a `Stream`, as the OpenAI SDK's `create` does.
        """
        response: Response = self(**config)
        return response

    async def acreate(self, **config: Any) -> Response:
        """Async twin of `create`."""
        response: Response = await self.acall(**config)
        return response

    @overload
    async def acall(self, messages: Any = None, *, stream: Literal[False] = False, **options: Any) -> Response: ...
    @overload
    async def acall(self, messages: Any = None, *, stream: Literal[True], **options: Any) -> AsyncStream: ...
    async def acall(
        self,
        messages: Any = None,
        *,
        response_format: Any = None,
        model: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        cache: str | None = None,
        sample: Any = None,
        retries: int | None = None,
        deadline: float | None = None,
        stream: bool = False,
        **params: Any,
    ) -> Response | AsyncStream:
        """Async twin of calling the object."""
        metadata = _call_metadata(metadata, cache, sample, retries, deadline)
        chain = self._chain()
        request = _build_request(self.role, chain, messages, response_format, model, timeout, metadata, params)
        return AsyncStream(chain[1].acall, request) if stream else await chain[1].acall(request)

    def batch(
        self,
        messages_list: Sequence[Any],
        *,
        max_concurrency: int = 8,
        progress: bool = False,
        return_exceptions: bool = True,
        **kwargs: Any,
    ) -> list[Any]:
        """Call the role once per item of `messages_list`; results come back in input order.

        Calls run on a thread pool of `max_concurrency`; on a local model they are gathered into
        batched `generate` calls. An item that fails leaves its exception in its place and the
        others are kept (`return_exceptions=False` raises the first error instead, after all
        calls finished). `progress=True` shows a tqdm bar when tqdm is installed. Keyword
        arguments apply to every call.
        """
        return _run_batch(self, messages_list, max_concurrency, progress, return_exceptions, kwargs)

    def __copy__(self) -> RoleLLM:
        # the role, its overrides (immutable) and its router are shared; the chain is looked up again
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._cache = None
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> RoleLLM:
        # a copied optimizer calls the same role: there is nothing of the role's own to copy
        return self.__copy__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"a RoleLLM (role {self.role!r}) cannot be pickled: its config may hold API keys, which myopto "
            "never writes out. Build it again in the other process: get_llm(role, **overrides)"
        )

    def __repr__(self) -> str:
        try:
            resolved = self._chain()[0]
        except Exception as error:  # noqa: BLE001 - repr must not raise: it shows why the role is unresolved
            return f"<RoleLLM role={self.role!r} (unresolved: {error})>"
        return f"<RoleLLM role={self.role!r} backend={resolved.backend} model={resolved.model!r}>"


class ModelName(str):
    """A role's model name that can also be called: `llm.model(messages=...)` is `llm(messages=...)`.

    Trace's `AbstractModel.model` is the callable that answers; myopto's is the model's name.
    This is both, so code written for either reads it as it expects.
    """

    _llm: RoleLLM | None

    def __new__(cls, name: str, llm: RoleLLM | None = None) -> ModelName:
        value = super().__new__(cls, name)
        value._llm = llm
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Response:
        if self._llm is None:
            raise TypeError(f"the model name {str(self)!r} is not attached to a role")
        response: Response = self._llm(*args, **kwargs)
        return response

    def __reduce__(self) -> Any:
        return str, (str(self),)  # a copy or a pickle is the plain name


# Per-call options that travel in metadata, whether given as keywords or inside `metadata`.
_CALL_OPTIONS = frozenset({"cache", "sample", "retries", "deadline"})


def _call_metadata(
    metadata: Mapping[str, Any] | None, cache: str | None, sample: Any, retries: int | None, deadline: float | None
) -> Mapping[str, Any] | None:
    """Per-call cache mode, sample number and retry bounds travel in metadata
    (`sample` enters the cache key; the others do not). Each is checked here, before anything
    is sent, also when the caller put it in `metadata` directly."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidRequest(f"metadata must be a dict, got {type(metadata).__name__}")
    if cache is None and sample is None and retries is None and deadline is None:
        if metadata and not _CALL_OPTIONS.isdisjoint(metadata):
            _check_call_options(metadata)
        return metadata
    extra = {
        key: value
        for key, value in (("cache", cache), ("sample", sample), ("retries", retries), ("deadline", deadline))
        if value is not None
    }
    merged = {**(metadata or {}), **extra}
    _check_call_options(merged)
    return merged


def _check_call_options(options: Mapping[str, Any]) -> None:
    if "cache" in options and options["cache"] not in CACHE_MODES:
        raise InvalidRequest(f"cache must be one of {CACHE_MODES}, got {options['cache']!r}")
    retries = options.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise InvalidRequest(f"retries must be a whole number >= 0, got {retries!r}")
    deadline = options.get("deadline")
    if deadline is not None and not _positive_seconds(deadline):
        raise InvalidRequest(f"deadline must be a positive, finite number of seconds, got {deadline!r}")
    if "sample" in options and not is_json_data(options["sample"]):
        raise InvalidRequest(
            "sample must be JSON data (a number, a string, or lists and dicts of them), "
            f"got {options['sample']!r:.80}: it is part of the cache key"
        )


def _build_request(
    role: str,
    chain: tuple[ResolvedRole, Pipeline],
    messages: Any,
    response_format: Any,
    model: str | None,
    timeout: float | None,
    metadata: Mapping[str, Any] | None,
    params: dict[str, Any],
) -> Request:
    """The checked `Request` of one call of `role` down `chain`, from the call's arguments."""
    resolved, pipeline = chain
    if messages is None:
        raise InvalidRequest("no messages given: call llm(messages=[{'role': 'user', 'content': ...}])")
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if timeout is not None and not _positive_seconds(timeout):
        raise InvalidRequest(f"timeout must be a positive, finite number of seconds, got {timeout!r}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidRequest(f"metadata must be a dict, got {type(metadata).__name__}")
    if metadata:  # the run and its tags are recorded with the answer: they must be storable
        run = metadata.get("run")
        if run is not None and not isinstance(run, str):
            raise InvalidRequest(f"metadata['run'] must be a run name (a string), got {run!r:.80}")
        if not is_json_data(metadata.get("tags")):
            raise InvalidRequest(f"metadata['tags'] must be JSON data, got {metadata.get('tags')!r:.80}")
    active = current_run()
    if active is not None and "run" not in (metadata or {}):
        metadata = {**(metadata or {}), "run": active.name, "tags": dict(active.tags)}
        if active.budgets:
            metadata["budgets"] = active.budgets
    if model is not None and not (isinstance(model, str) and model.strip()):
        raise InvalidRequest(f"model must be a non-empty string such as 'gpt-4o-mini', got {model!r:.80}")
    model = str(model) if isinstance(model, ModelName) else (model or resolved.model)  # the name, not the callable
    return Request(
        model=model,
        messages=check_messages(messages),
        params={**resolved.params, **check_params(params)},
        response_format=normalize_response_format(response_format),
        role=role,
        backend=resolved.backend,
        endpoint=pipeline.backend.endpoint_for(model),
        # the role's timeout travels with the request, so retry can clip it to its deadline
        timeout=timeout if timeout is not None else resolved.options.get("timeout"),
        metadata=metadata or {},
    )


def _run_batch(
    llm: RoleLLM,
    messages_list: Sequence[Any],
    max_concurrency: int,
    progress: bool,
    return_exceptions: bool,
    kwargs: Mapping[str, Any],
) -> list[Any]:
    """`RoleLLM.batch`: one call of `llm` per item on a thread pool, results in input order."""
    if max_concurrency < 1:
        raise InvalidRequest("max_concurrency must be at least 1")
    items = list(messages_list)
    results: list[Any] = [None] * len(items)
    bar = _progress_bar(len(items)) if progress else None
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(max_concurrency, max(len(items), 1))) as pool:
        # each call runs in a copy of the caller's context, so an active `myopto.run` tags it
        futures = {
            pool.submit(_call_in_context, contextvars.copy_context(), llm, item, kwargs): index
            for index, item in enumerate(items)
        }
        for future in concurrent.futures.as_completed(futures):
            index = futures[future]
            error = future.exception()
            results[index] = error if error is not None else future.result()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if not return_exceptions:
        for result in results:
            if isinstance(result, BaseException):
                raise result
    return results


def _call_in_context(context: contextvars.Context, llm: RoleLLM, messages: Any, kwargs: Mapping[str, Any]) -> Response:
    """`llm(messages, **kwargs)` run in `context`: a copy of the caller's, taken when the call was submitted."""
    return context.run(llm, messages, **kwargs)


def _positive_seconds(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf


def _progress_bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="myopto batch", unit="call")


def get_llm(role: str = "executor", **overrides: Any) -> RoleLLM:
    """The LLM of a role. Keyword overrides (model=, backend=, temperature=, ...) apply to this object only."""
    return RoleLLM(role, overrides_from(**overrides))
