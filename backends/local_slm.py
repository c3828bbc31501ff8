"""`LocalSLM`: small language models run in-process, with transformers (default) or MLX.

A model is loaded once per process, on first use, and shared by every role that names it.
Concurrent requests to one transformers model are gathered into one padded `generate`.
JSON comes from an instruction in the prompt; with `constrained=True` (role option or per call)
decoding is also constrained by the schema's grammar, so every answer is valid JSON.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, ClassVar

from myopto.backends.base import BaseBackend
from myopto.backends.model_files import locate
from myopto.output_format import schema_of
from myopto.request import Request
from myopto.response import Response, Usage

_engines: dict[tuple[Any, ...], Any] = {}
_engine_locks: dict[tuple[Any, ...], threading.Lock] = {}
_registry_lock = threading.Lock()
LOADS: Counter[str] = Counter()  # model loads per model name in this process


def engine_for(model: str, *, use_mlx: bool, device: str | None, torch_dtype: str | None,
               trust_remote_code: bool, max_batch_size: int, batch_wait: float) -> Any:
    """The loaded engine for a model, loading it on first use (once, even under concurrent first calls)."""
    key = ("mlx" if use_mlx else "transformers", model, device or "auto", torch_dtype or "auto", trust_remote_code)
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _registry_lock:
        lock = _engine_locks.setdefault(key, threading.Lock())
    with lock:
        engine = _engines.get(key)
        if engine is None:
            source = locate(model)
            if use_mlx:
                from myopto.backends.mlx_engine import MlxEngine

                engine = MlxEngine(source)
            else:
                from myopto.backends.transformers_engine import TransformersEngine

                engine = TransformersEngine(source, device=device, torch_dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                            max_batch_size=max_batch_size, batch_wait=batch_wait)
            LOADS[model] += 1
            _engines[key] = engine
    return engine


class LocalSLM(BaseBackend):
    """A local model via transformers, or MLX with `use_mlx=True`.

    Options: `device` ("auto": cuda > mps > cpu), `torch_dtype` ("float32", "float16",
    "bfloat16"; default float32 on CPU, float16 on CUDA), `use_mlx`, `trust_remote_code`,
    `max_batch_size` (8), `batch_wait` (seconds to wait for more concurrent requests, 0.01).
    The parameter `constrained=True` (role default or per call) turns on grammar-constrained
    JSON. Decoding is greedy unless temperature > 0; max_tokens / max_new_tokens default to 256.
    Cost is 0.
    """

    kind: ClassVar[str] = "LocalSLM"
    supports_batching: ClassVar[bool] = True
    reports_cost: ClassVar[bool] = True
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"device", "torch_dtype", "use_mlx", "trust_remote_code", "max_batch_size", "batch_wait"}
    )
    default_model: ClassVar[str | None] = "Qwen/Qwen2-0.5B-Instruct"

    def __init__(self, *, device: str | None = None, torch_dtype: str | None = None, use_mlx: bool = False,
                 trust_remote_code: bool = False, max_batch_size: int = 8, batch_wait: float = 0.01) -> None:
        super().__init__()
        self.device = device
        self.torch_dtype = torch_dtype
        self.use_mlx = bool(use_mlx)
        self.trust_remote_code = trust_remote_code
        self.max_batch_size = max_batch_size
        self.batch_wait = batch_wait
        # No native JSON mode: structured output instructs the model in the prompt. With the
        # `constrained=True` parameter (role default or per call) it also passes the schema
        # through, and decoding is constrained by its grammar.
        self.wants_json_instruction = True

    def provider_name(self, model: str) -> str:
        return "mlx" if self.use_mlx else "transformers"

    def engine(self, model: str) -> Any:
        return engine_for(model, use_mlx=self.use_mlx, device=self.device, torch_dtype=self.torch_dtype,
                          trust_remote_code=self.trust_remote_code, max_batch_size=self.max_batch_size,
                          batch_wait=self.batch_wait)

    def complete(self, request: Request) -> Response:
        from myopto.backends.transformers_engine import Generation

        engine = self.engine(request.model)
        params = request.params_dict()
        response_format = request.response_format_dict()
        constrained = bool(params.get("constrained")) and response_format is not None
        budget = params.get("max_new_tokens") or params.get("max_tokens") or params.get("max_completion_tokens") or 256
        generation = Generation(
            prompt_ids=engine.prompt_ids(request.messages_list()),
            max_new_tokens=int(budget),
            temperature=float(params.get("temperature") or 0.0),
            top_p=params.get("top_p"),
            top_k=params.get("top_k"),
            repetition_penalty=params.get("repetition_penalty"),
            seed=params.get("seed"),
            stop=tuple(params.get("stop") or ()),
            json_schema=(schema_of(response_format) or {}) if constrained else None,
            constrained=constrained,
        )
        start = time.perf_counter()
        result = engine.generate(generation)
        return Response(
            text=result.text,
            model=request.model,
            usage=Usage.of(result.prompt_tokens, result.completion_tokens),
            cost=0.0,
            latency=time.perf_counter() - start,
            finish_reason=result.finish_reason,
        )

    @classmethod
    def knows_price(cls, model: str) -> bool:
        return True  # a local model costs nothing

    def describe(self) -> str:
        engine = "mlx" if self.use_mlx else "transformers"
        return f"{self.kind} [{engine}, batching, JSON by prompt or grammar, cost 0]"
