"""`LocalSLM`: small language models run in-process, on llama.cpp, transformers or MLX.

A model is loaded once per process, on first use, and shared by every role that names it.
Concurrent requests decode together: as parallel sequences of one llama.cpp context, or in
one padded transformers `generate`.
JSON comes from an instruction in the prompt; with `constrained=True` (role option or per call)
decoding is also constrained by the schema's grammar, so every answer is closed JSON, and
`StructuredOutput` checks it against the whole schema (keywords the grammar cannot enforce
included) and re-asks; a schema constrained decoding cannot honour is refused before decoding.

The cache key names what the model is (`LocalSLM.endpoint_for`): the engine, the dtype it runs
in, and the sha256 of the model's files, worked out once per model and process.
A closed engine leaves the registry: the next call loads a fresh one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import threading
import time
from collections import Counter
from typing import Any, ClassVar

from myopto.backends.base import BaseBackend
from myopto.backends.generation import Generation
from myopto.backends.local_tools import local_messages, tool_plan
from myopto.backends.model_files import identity, locate
from myopto.errors import BackendTimeout, ConfigError
from myopto.output_format import schema_of
from myopto.request import Request
from myopto.response import Choice, Message, Response, Usage

ENGINES = ("auto", "llama.cpp", "transformers", "mlx")

_engines: dict[tuple[Any, ...], Any] = {}
_engine_locks: dict[tuple[Any, ...], threading.Lock] = {}
_registry_lock = threading.Lock()
LOADS: Counter[str] = Counter()  # model loads per model name in this process
# LocalSLM endpoints (cache-key identities) per (model, engine choice, device, dtype), worked out
# on a model's first call; forgotten when an engine of the model loads or closes.
_endpoints: dict[tuple[Any, ...], str] = {}


def choose_engine(model: str, engine: str = "auto", *, use_mlx: bool = False) -> str:
    """Which engine runs `model`: an explicit choice, else MLX for `use_mlx=True`, llama.cpp for
    a GGUF file (the embedded model included) when llama-cpp-python is installed, else transformers."""
    if use_mlx:
        return "mlx"
    return engine if engine != "auto" else _auto_engine(model)


@functools.lru_cache(maxsize=256)
def _auto_engine(model: str) -> str:
    """Decided once per model and process (it looks on disk and for an installed package):
    every call to a role asks, and the answer is the engine the model was loaded on."""
    from myopto.backends import llama_cpp_engine

    if llama_cpp_engine.available() and locate(model, prefer_gguf=True).gguf_file:
        return "llama.cpp"
    return "transformers"


def engine_for(
    model: str,
    *,
    engine: str = "auto",
    use_mlx: bool = False,
    device: str | None = None,
    torch_dtype: str | None = None,
    trust_remote_code: bool = False,
    max_batch_size: int = 8,
    batch_wait: float = 0.01,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    prompt_cache: bool = True,
) -> Any:
    """The loaded engine for a model, loading it on first use (once, even under concurrent first calls)."""
    name = choose_engine(model, engine, use_mlx=use_mlx)
    if name == "llama.cpp":
        key: tuple[Any, ...] = (name, model, max_batch_size, n_ctx, n_threads, bool(prompt_cache))
    else:
        key = (name, model, device or "auto", torch_dtype or "auto", trust_remote_code)
    loaded = _engines.get(key)
    if loaded is not None and not getattr(loaded, "closed", False):
        return loaded
    with _registry_lock:
        lock = _engine_locks.setdefault(key, threading.Lock())
    with lock:
        loaded = _engines.get(key)
        if loaded is None or getattr(loaded, "closed", False):
            if name == "llama.cpp":
                from myopto.backends.llama_cpp_engine import LlamaCppEngine

                loaded = LlamaCppEngine(
                    locate(model, prefer_gguf=True),
                    max_batch_size=max_batch_size,
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    prompt_cache=bool(prompt_cache),
                )
            elif name == "mlx":
                from myopto.backends.mlx_engine import MlxEngine

                loaded = MlxEngine(locate(model))
            else:
                from myopto.backends.transformers_engine import TransformersEngine

                loaded = TransformersEngine(
                    locate(model),
                    device=device,
                    torch_dtype=torch_dtype,
                    trust_remote_code=trust_remote_code,
                    max_batch_size=max_batch_size,
                    batch_wait=batch_wait,
                )
            LOADS[model] += 1
            _engines[key] = loaded
            _forget_endpoints(model)  # worked out again from the files just loaded
            if hasattr(loaded, "on_close"):
                loaded.on_close(functools.partial(_forget_engine, key, loaded, model))
    return loaded


def _forget_engine(key: tuple[Any, ...], engine: Any, model: str) -> None:
    """A closed engine frees its slot: the next call loads the model again (and keys it again)."""
    with _registry_lock:
        if _engines.get(key) is engine:
            del _engines[key]
    _forget_endpoints(model)


def _forget_endpoints(model: str) -> None:
    with _registry_lock:
        for stale in [k for k in _endpoints if k[0] == model]:
            _endpoints.pop(stale, None)


class LocalSLM(BaseBackend):
    """A local model, run in this process by one of three engines.

    `engine`: "auto" (default) runs a `.gguf` file, and the embedded SmolLM2, on llama.cpp when
    llama-cpp-python is installed, and everything else on transformers; "llama.cpp",
    "transformers" or "mlx" choose. `use_mlx=True` is the same as engine="mlx".

    Options for transformers: `device` ("auto": cuda > mps > cpu), `torch_dtype` ("float32",
    "float16", "bfloat16"; default float32 on CPU, float16 on CUDA), `trust_remote_code`,
    `batch_wait` (seconds to wait for more concurrent requests, 0.01). For llama.cpp: `n_ctx`
    (tokens per sequence, default the model's training context up to 4096) and `n_threads`
    (default every core this process may use) and `prompt_cache` (True: a prompt that begins
    with 256 or more tokens an earlier one began with decodes only the rest). For both: `max_batch_size` (8), how many requests decode together.
    The parameter `constrained=True` (role default or per call) turns on grammar-constrained
    JSON; a schema it cannot honour, or whose shortest answer needs more tokens than max_tokens,
    is an `InvalidRequest` before anything is decoded. Decoding is greedy unless temperature > 0;
    max_tokens / max_new_tokens default to 256. On llama.cpp a call's `timeout` is honoured and a
    caller that leaves costs no further decoding. Cost is 0.
    """

    kind: ClassVar[str] = "LocalSLM"
    supports_batching: ClassVar[bool] = True
    reports_cost: ClassVar[bool] = True
    option_names: ClassVar[frozenset[str]] = frozenset(
        {
            "engine",
            "device",
            "torch_dtype",
            "use_mlx",
            "trust_remote_code",
            "max_batch_size",
            "batch_wait",
            "n_ctx",
            "n_threads",
            "prompt_cache",
        }
    )
    default_model: ClassVar[str | None] = "Qwen/Qwen2-0.5B-Instruct"

    def __init__(
        self,
        *,
        engine: str = "auto",
        device: str | None = None,
        torch_dtype: str | None = None,
        use_mlx: bool = False,
        trust_remote_code: bool = False,
        max_batch_size: int = 8,
        batch_wait: float = 0.01,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        prompt_cache: bool = True,
    ) -> None:
        super().__init__()
        if engine not in ENGINES:
            raise ConfigError(f"LocalSLM engine={engine!r} is not one of {list(ENGINES)}")
        if use_mlx and engine not in ("auto", "mlx"):
            raise ConfigError(f"LocalSLM got use_mlx=True and engine={engine!r}; give one of them")
        for name, value in (("max_batch_size", max_batch_size), ("n_ctx", n_ctx), ("n_threads", n_threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"LocalSLM {name} must be a positive whole number, not {value!r}")
        self.engine_name = "mlx" if use_mlx else engine
        self.device = device
        self.torch_dtype = torch_dtype
        self.trust_remote_code = trust_remote_code
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.prompt_cache = prompt_cache
        # No native JSON mode: structured output instructs the model in the prompt. With the
        # `constrained=True` parameter (role default or per call) it also passes the schema
        # through, and decoding is constrained by its grammar.
        self.wants_json_instruction = True

    def provider_name(self, model: str) -> str:
        return choose_engine(model, self.engine_name)

    def endpoint_for(self, model: str) -> str | None:
        """What answers a call to `model`, for the cache key: `local:<engine>;dtype=<dtype>;model=<identity>`
        (with `device=` on transformers). The identity is the sha256 of the GGUF file or of the
        model folder's files, or a hub id's cached revision, so a model retrained or replaced in
        place keys new answers once it is loaded again. Worked out on the model's first call in
        the process (the files are hashed then) and again after its engine loads or closes;
        other calls read it from memory."""
        key = (model, self.engine_name, self.device, self.torch_dtype)
        endpoint = _endpoints.get(key)
        if endpoint is None:
            endpoint = self._identify(model)
            if not endpoint.endswith("model=unavailable"):
                with _registry_lock:
                    _endpoints[key] = endpoint
        return endpoint

    def _identify(self, model: str) -> str:
        name = self.engine_name
        try:
            name = choose_engine(model, self.engine_name)
            source = locate(model, prefer_gguf=name == "llama.cpp")
            if name == "transformers":
                from myopto.backends.transformers_engine import pick_device, pick_dtype

                device = pick_device(self.device)
                runs_as = f"dtype={str(pick_dtype(self.torch_dtype, device)).removeprefix('torch.')};device={device}"
            else:  # llama.cpp and MLX run the weights as the files store them
                runs_as = "dtype=as-stored"
            return f"local:{name};{runs_as};model={identity(source)}"
        except (OSError, ValueError, ImportError):
            # no model to identify (the call will say why): a key no answered call ever had
            return f"local:{name};model=unavailable"

    def engine(self, model: str) -> Any:
        return engine_for(
            model,
            engine=self.engine_name,
            device=self.device,
            torch_dtype=self.torch_dtype,
            trust_remote_code=self.trust_remote_code,
            max_batch_size=self.max_batch_size,
            batch_wait=self.batch_wait,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            prompt_cache=self.prompt_cache,
        )

    def complete(self, request: Request) -> Response:
        """On llama.cpp the request's `timeout` is honoured: a caller that stops waiting
        cancels its request, which then costs no more decoding steps (none, if it had not started).
        `n` > 1 decodes n sequences of the prompt together, in one batch."""
        engine = self.engine(request.model)
        start = time.perf_counter()
        generations = self._generations(engine, request)
        submit = getattr(engine, "submit", None)
        if submit is None:
            if len(generations) == 1:
                return self._response(request, [engine.generate(generations[0])], start)
            # concurrent callers of the engine are gathered into one batch (its batcher)
            with concurrent.futures.ThreadPoolExecutor(len(generations), thread_name_prefix="myopto-n") as pool:
                return self._response(request, list(pool.map(engine.generate, generations)), start)
        futures: list[concurrent.futures.Future[Any]] = []
        try:
            for generation in generations:
                futures.append(submit(generation))
            results = [future.result(timeout=_left(request, start)) for future in futures]
        except concurrent.futures.TimeoutError:
            _cancel(futures)
            raise self._timeout(request) from None
        except BaseException:  # interrupted, or refused: nobody waits for the answers any more
            _cancel(futures)
            raise
        return self._response(request, results, start)

    async def acomplete(self, request: Request) -> Response:
        """On llama.cpp the answer is awaited without holding a thread while it decodes, so
        asyncio callers decode together however small the default thread pool is; the other
        engines generate in a worker thread. A cancelled or timed-out caller cancels its
        request, even while its grammar is still compiling: it is then never decoded."""
        engine = await asyncio.to_thread(self.engine, request.model)  # loads the model once, off the loop
        submit = getattr(engine, "submit", None)
        if submit is None:
            return await super().acomplete(request)
        start = time.perf_counter()
        count = request.params.get("n") or 1
        futures: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in range(count)]

        def queue_all() -> None:
            for generation, future in zip(self._generations(engine, request), futures):
                submit(generation, future)

        try:
            await asyncio.to_thread(queue_all)
        except BaseException:
            _cancel(futures)  # the worker thread then leaves them unqueued
            raise
        try:  # cancelling the awaited wrappers cancels the requests' futures too
            results = await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), _left(request, start))
        except asyncio.TimeoutError:
            raise self._timeout(request) from None
        return self._response(request, list(results), start)

    @staticmethod
    def _timeout(request: Request) -> BackendTimeout:
        return BackendTimeout(
            f"LocalSLM did not answer within the timeout of {request.timeout} s; the request was dropped",
            retryable=True,
            role=request.role,
            model=request.model,
        )

    def _generations(self, engine: Any, request: Request) -> list[Generation]:
        """The request's `n` sequences (1 unless `n` says more). With a `seed`, sequence i is
        seeded `seed + i`, so the n answers differ and each is reproducible; greedy decoding
        (temperature 0) gives n identical answers, as servers do."""
        generation = self._generation(engine, request)
        count = request.params.get("n") or 1
        if generation.seed is None:
            return [generation] * count
        return [dataclasses.replace(generation, seed=generation.seed + index) for index in range(count)]

    def _generation(self, engine: Any, request: Request) -> Generation:
        params = request.params_dict()
        tools = tool_plan(params.get("tools"), params.get("tool_choice"))
        response_format = request.response_format_dict()
        constrained = bool(params.get("constrained")) and response_format is not None
        schema = (schema_of(response_format) or {}) if constrained else None
        if tools is not None:  # a call decoded under the tools' grammar (or, with "auto", text)
            constrained, schema = True, tools.schema
        budget = params.get("max_new_tokens") or params.get("max_tokens") or params.get("max_completion_tokens") or 256
        if tools is not None:
            tools.check_fits(engine.text_ids, int(budget))
        return Generation(
            prompt_ids=engine.prompt_ids(local_messages(request.messages_list(), tools)),
            max_new_tokens=int(budget),
            temperature=float(params.get("temperature") or 0.0),
            top_p=params.get("top_p"),
            top_k=params.get("top_k"),
            repetition_penalty=params.get("repetition_penalty"),
            seed=params.get("seed"),
            stop=tuple(params.get("stop") or ()),
            json_schema=schema,
            constrained=constrained,
            free_text=tools is not None and tools.free_text,
        )

    @staticmethod
    def _response(request: Request, results: list[Any], start: float) -> Response:
        """One choice per decoded sequence (a tool call when the tools' grammar decoded one); the
        prompt is counted once, as providers count it."""
        params = request.params_dict()
        tools = tool_plan(params.get("tools"), params.get("tool_choice"))
        choices = []
        for index, result in enumerate(results):
            message, finish_reason = (
                tools.read(result.text, index) if tools is not None else (Message(content=result.text), None)
            )
            if (
                finish_reason is None or result.finish_reason != "stop"
            ):  # a call cut off by its budget (then closed) says so
                finish_reason = result.finish_reason
            choices.append(Choice(message=message, index=index, finish_reason=finish_reason))
        first = results[0]
        return Response(
            text=choices[0].message.content or "",
            model=request.model,
            usage=Usage.of(first.prompt_tokens, sum(result.completion_tokens for result in results)),
            cost=0.0,
            latency=time.perf_counter() - start,
            finish_reason=choices[0].finish_reason,
            choices=tuple(choices),
        )

    @classmethod
    def knows_price(cls, model: str) -> bool:
        return True  # a local model costs nothing

    def describe(self) -> str:
        engine = (
            "auto engine: llama.cpp for GGUF files when installed, else transformers"
            if self.engine_name == "auto"
            else f"{self.engine_name} engine"
        )
        return f"{self.kind} [{engine}, batching, JSON by prompt or grammar, cost 0]"


def _left(request: Request, start: float) -> float | None:
    """Seconds left of the request's timeout (None: no timeout)."""
    return None if request.timeout is None else max(0.0, request.timeout - (time.perf_counter() - start))


def _cancel(futures: list[concurrent.futures.Future[Any]]) -> None:
    """Cancel every sequence of a call whose caller left (queued ones are then never decoded)."""
    for future in futures:
        future.cancel()
