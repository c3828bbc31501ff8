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
Engines are loaded and shared through `engine_registry`: a closed engine leaves it, and the next
call loads a fresh one. `local_calls` turns a request into the engine's generations and their
results into a `Response`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any, ClassVar

from myopto.errors import BackendTimeout, ConfigError, StreamClosed
from myopto.request import Request
from myopto.response import Response

from .base import BaseBackend
from .engine_registry import ENGINES, known_endpoint, remember_endpoint
from .engine_registry import LOADS as LOADS
from .engine_registry import choose_engine as choose_engine
from .engine_registry import engine_for as engine_for
from .local_calls import LocalStream, local_response, request_generations
from .model_files import identity, locate


class LocalSLM(BaseBackend):
    """A local model, run in this process by one of three engines.

    `engine`: "auto" (default) runs a `.gguf` file, and the embedded SmolLM2, on llama.cpp when
    llama-cpp-python is installed, and everything else on transformers; "llama.cpp",
    "transformers" or "mlx" choose. `use_mlx=True` is the same as engine="mlx".

    Options for transformers: `device` ("auto": cuda > mps > cpu), `torch_dtype` ("float32",
    "float16", "bfloat16"; default float32 on CPU, float16 on CUDA), `trust_remote_code`,
    `batch_wait` (seconds a batch waits for the next concurrent request after the latest one,
    0.01, and at most five times that in all). For llama.cpp: `n_ctx` (tokens per sequence,
    default the model's training context up to 4096) and `n_threads` (default every core this
    process may use) and `prompt_cache` (True: a prompt decodes only what an earlier one did not
    begin with; a prompt under 64 tokens reuses a shared beginning of any length, a longer one
    a beginning of 256 or more tokens). For both:
    `max_batch_size` (8), how many requests decode together.
    The parameter `constrained=True` (role default or per call) turns on grammar-constrained
    JSON; a schema it cannot honour, or whose shortest answer needs more tokens than max_tokens,
    is an `InvalidRequest` before anything is decoded. Decoding is greedy unless temperature > 0;
    max_tokens / max_new_tokens default to 256. On llama.cpp a call's `timeout` is honoured and a
    caller that leaves costs no further decoding. Cost is 0.

    Streams on every engine (`llm.stream(...)`): each token's text reaches the caller as it is
    decoded (llama.cpp: from the engine's step, while other callers keep decoding in the same
    batch; transformers: after each step of the batch's `generate`; MLX: each step mlx-lm
    yields), held back only while it may begin a stop string. Constrained JSON streams too, the
    closer's tokens last. A tool call streams as one tool-call delta once decoded (its JSON is
    not streamed as text); under tool_choice="auto" a text answer streams as text. Closing the
    stream ends its sequences at once (llama.cpp: their slots are free at the next step; the
    other engines: at their next token). The chunks' texts always add up to the answer's: if a
    constrained answer cut off by max_tokens is replaced by the schema's shortest answer (when
    the closer cannot close it), the stream fails with `StreamBroken` instead.
    """

    kind: ClassVar[str] = "LocalSLM"
    supports_batching: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True
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
        endpoint = known_endpoint(key)
        if endpoint is None:
            endpoint = self._identify(model)
            if not endpoint.endswith("model=unavailable"):
                remember_endpoint(key, endpoint)
        return endpoint

    def _identify(self, model: str) -> str:
        name = self.engine_name
        try:
            name = choose_engine(model, self.engine_name)
            source = locate(model, prefer_gguf=name == "llama.cpp")
            if name == "transformers":
                from .transformers_engine import pick_device, pick_dtype

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
        `n` > 1 decodes n sequences of the prompt together, in one batch. A request with a
        `sink` streams (`LocalStream`)."""
        engine = self.engine(request.model)
        start = time.perf_counter()
        stream = LocalStream(request) if request.sink is not None else None
        generations = request_generations(engine, request, stream.on_text if stream else None)
        submit = getattr(engine, "submit", None)
        if submit is None:
            if len(generations) == 1:
                results = [engine.generate(generations[0])]
            else:  # concurrent callers of the engine are gathered into one batch (its batcher)
                with concurrent.futures.ThreadPoolExecutor(len(generations), thread_name_prefix="myopto-n") as pool:
                    results = list(pool.map(engine.generate, generations))
            return _answer(request, results, start, stream)
        futures: list[concurrent.futures.Future[Any]] = []
        try:
            for generation in generations:
                futures.append(submit(generation))
            if stream is not None:  # the caller's close stops every sequence at once
                request.sink.on_close(lambda: _cancel(futures))
            results = [future.result(timeout=_left(request, start)) for future in futures]
        except concurrent.futures.TimeoutError:
            _cancel(futures)
            raise self._timeout(request) from None
        except concurrent.futures.CancelledError:
            _cancel(futures)
            if stream is not None and stream.closed:
                raise StreamClosed(text=stream.text_of(0)) from None
            raise
        except BaseException:  # interrupted, or refused: nobody waits for the answers any more
            _cancel(futures)
            raise
        return _answer(request, results, start, stream)

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
        stream = LocalStream(request) if request.sink is not None else None
        count = request.params.get("n") or 1
        futures: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in range(count)]

        def queue_all() -> None:
            for generation, future in zip(
                request_generations(engine, request, stream.on_text if stream else None), futures, strict=True
            ):
                submit(generation, future)

        if stream is not None:  # the caller's close stops every sequence, queued or not
            request.sink.on_close(lambda: _cancel(futures))
        try:
            await asyncio.to_thread(queue_all)
        except BaseException:
            _cancel(futures)  # the worker thread then leaves them unqueued
            raise
        gathered = asyncio.gather(*map(asyncio.wrap_future, futures))
        gathered.add_done_callback(_retrieved)  # a stream closed mid-way fails it after its waiter left
        try:  # cancelling the awaited wrappers cancels the requests' futures too
            results = await asyncio.wait_for(gathered, _left(request, start))
        except asyncio.TimeoutError:
            raise self._timeout(request) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            cancelling = getattr(task, "cancelling", lambda: 0)()  # Python 3.11+: this task itself was cancelled
            if stream is not None and stream.closed and not cancelling:
                raise StreamClosed(text=stream.text_of(0)) from None
            raise
        return _answer(request, list(results), start, stream)

    @staticmethod
    def _timeout(request: Request) -> BackendTimeout:
        return BackendTimeout(
            f"LocalSLM did not answer within the timeout of {request.timeout} s; the request was dropped",
            retryable=True,
            role=request.role,
            model=request.model,
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
        return f"{self.kind} [{engine}, batching, streaming, JSON by prompt or grammar, cost 0]"


def _answer(request: Request, results: list[Any], start: float, stream: LocalStream | None) -> Response:
    response = local_response(request, results, start)
    return response if stream is None else stream.finish(response)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _left(request: Request, start: float) -> float | None:
    """Seconds left of the request's timeout (None: no timeout)."""
    return None if request.timeout is None else max(0.0, request.timeout - (time.perf_counter() - start))


def _cancel(futures: list[concurrent.futures.Future[Any]]) -> None:
    """Cancel every sequence of a call whose caller left (queued ones are then never decoded)."""
    for future in futures:
        future.cancel()
