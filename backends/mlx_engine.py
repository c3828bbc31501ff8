"""The MLX engine of LocalSLM (`use_mlx=True`), through mlx-lm: Apple Silicon, or the CPU
backend of `mlx[cpu]` on Linux."""

from __future__ import annotations

import threading
from typing import Any

from myopto.backends.model_files import ModelSource
from myopto.backends.transformers_engine import Generated, Generation
from myopto.errors import BackendUnavailable, ConfigError
from myopto.parsing import content_text


class MlxEngine:
    """A model loaded with `mlx_lm.load`; one generation at a time (MLX streams are not shared)."""

    def __init__(self, source: ModelSource) -> None:
        try:
            import mlx.core as mx
            import mlx_lm
            from mlx_lm.sample_utils import make_sampler
        except ImportError as error:
            raise BackendUnavailable(
                "use_mlx=True needs MLX: pip install 'myopto[mlx]' (mlx on macOS, mlx[cpu] on Linux); "
                f"import failed: {error}"
            ) from error
        if source.gguf_file:
            raise BackendUnavailable(
                f"MLX loads model folders (safetensors), not GGUF files like {source.gguf_file!r}; use_mlx=False loads it with transformers"
            )
        self.mx = mx
        self.mlx_lm = mlx_lm
        self.make_sampler = make_sampler
        self.source = source
        self.model, self.tokenizer = mlx_lm.load(source.path)
        self._lock = threading.Lock()

    def prompt_ids(self, messages: list[dict[str, Any]]) -> tuple[int, ...]:
        messages = [{"role": m["role"], "content": content_text(m.get("content"))} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"
            ids = self.tokenizer.encode(prompt)
        return tuple(int(i) for i in ids)

    def generate(self, generation: Generation) -> Generated:
        if generation.constrained:
            raise ConfigError("constrained decoding runs on the transformers engine; set use_mlx=False for constrained=True")
        sampler = self.make_sampler(
            temp=generation.temperature, top_p=generation.top_p or 0.0, top_k=generation.top_k or 0
        )
        text, last = "", None
        with self._lock:
            if generation.seed is not None:
                self.mx.random.seed(generation.seed)
            for step in self.mlx_lm.stream_generate(
                self.model, self.tokenizer, list(generation.prompt_ids), max_tokens=generation.max_new_tokens, sampler=sampler
            ):
                text += step.text
                last = step
                if generation.stop and any(s in text for s in generation.stop):
                    break
        finish = getattr(last, "finish_reason", None) or "stop"
        if generation.stop:
            cut = min((i for i in (text.find(s) for s in generation.stop) if i >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        completion = getattr(last, "generation_tokens", 0) if last is not None else 0
        return Generated(text, len(generation.prompt_ids), completion, finish)
