"""The loaded local engines: one per model and engine options in a process, loaded on first use
and shared by every role that names the model.

`engine_for` loads an engine once, even under concurrent first calls; a closed engine leaves the
registry, and the next call loads a fresh one. `choose_engine` says which engine runs a model.
`LocalSLM`'s endpoints (cache-key identities) are remembered here too, and forgotten when an
engine of their model loads or closes, so they are worked out again from the files loaded.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from typing import Any

from .model_files import locate

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
    from . import llama_cpp_engine

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
                from .llama_cpp_engine import LlamaCppEngine

                loaded = LlamaCppEngine(
                    locate(model, prefer_gguf=True),
                    max_batch_size=max_batch_size,
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    prompt_cache=bool(prompt_cache),
                )
            elif name == "mlx":
                from .mlx_engine import MlxEngine

                loaded = MlxEngine(locate(model))
            else:
                from .transformers_engine import TransformersEngine

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


def known_endpoint(key: tuple[Any, ...]) -> str | None:
    """The endpoint worked out for `key` (model, engine choice, device, dtype), if still valid."""
    return _endpoints.get(key)


def remember_endpoint(key: tuple[Any, ...], endpoint: str) -> None:
    """Keep `endpoint` for `key` until an engine of the model loads or closes."""
    with _registry_lock:
        _endpoints[key] = endpoint
