"""The MLX engine of LocalSLM (`use_mlx=True`), through mlx-lm: Apple Silicon, or the CPU
backend of `mlx[cpu]` on Linux.

`constrained=True` works here as on the transformers engine, with the same xgrammar grammars
and the same closer (`JsonConstraint`): an mlx-lm logits processor hands each step's logits to
the constraint and takes the masked ones back, and an answer cut off by the token budget is
closed into valid JSON for the schema.

A streamed request (`Generation.on_text`) gets the text of each step mlx-lm yields as it comes;
a callback that raises (`StreamClosed`) ends the generation with that error."""

from __future__ import annotations

import threading
from typing import Any

from myopto.errors import BackendUnavailable

from .generation import Generated, Generation, StreamedText, cut_at_stop, plain_prompt, text_messages
from .json_grammar import GrammarCache, JsonConstraint, LazyGrammars, constrained_plan
from .model_files import ModelSource


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
                f"MLX loads model folders (safetensors), not GGUF files like {source.gguf_file!r}; "
                "use_mlx=False loads it with transformers"
            )
        self.mx = mx
        self.mlx_lm = mlx_lm
        self.make_sampler = make_sampler
        self.source = source
        loaded = mlx_lm.load(source.path)  # (model, tokenizer): its config only when asked for
        self.model = loaded[0]
        self.tokenizer: Any = loaded[1]  # mlx_lm's wrapper: it hands untyped calls on to the Hugging Face tokenizer
        self._lock = threading.Lock()
        self._grammars = LazyGrammars(self._build_grammars)

    @property
    def stop_ids(self) -> set[int]:
        return {int(i) for i in getattr(self.tokenizer, "eos_token_ids", None) or ()}

    @property
    def grammars(self) -> GrammarCache:
        return self._grammars()

    def _build_grammars(self) -> GrammarCache:
        """Compiled grammars for this model's Hugging Face tokenizer, sized to its logits."""
        hf_tokenizer = getattr(self.tokenizer, "_tokenizer", self.tokenizer)
        vocab_size = self.model(self.mx.array([[0]])).shape[-1]  # the logits' width, padding included
        return GrammarCache.for_tokenizer(hf_tokenizer, int(vocab_size))

    def _mlx_processor(self, constraint: JsonConstraint) -> Any:
        """An mlx-lm logits processor that masks through the (torch-based) JSON constraint."""
        try:
            import numpy as np
            import torch
        except ImportError as error:
            raise BackendUnavailable(
                "constrained=True on MLX needs the local extra too: pip install 'myopto[local,mlx]'"
            ) from error
        mx = self.mx

        def process(tokens: Any, logits: Any) -> Any:
            ids = torch.from_numpy(np.array(tokens, dtype=np.int64))[None]
            scores = torch.from_numpy(np.array(logits.astype(mx.float32)))
            return mx.array(constraint(ids, scores).numpy()).astype(logits.dtype)

        return process

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens): how long an answer is."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, messages: list[dict[str, Any]]) -> tuple[int, ...]:
        messages = text_messages(messages)
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            ids = self.tokenizer.encode(plain_prompt(messages))
        return tuple(int(i) for i in ids)

    def generate(self, generation: Generation) -> Generated:
        sampler = self.make_sampler(
            temp=generation.temperature, top_p=generation.top_p or 0.0, top_k=generation.top_k or 0
        )
        constraint = None
        processors = []
        if generation.constrained:
            plan = constrained_plan(
                self._grammars,
                generation.json_schema or None,
                self.text_ids,
                generation.max_new_tokens,
                free_text=generation.free_text,
            )
            constraint = JsonConstraint(self.grammars, [plan], [generation.max_new_tokens], len(generation.prompt_ids))
            processors.append(self._mlx_processor(constraint))
        text, tokens, last = "", [], None
        stream = (
            StreamedText(generation.on_text, () if constraint else generation.stop)
            if generation.on_text is not None
            else None
        )
        with self._lock:
            if generation.seed is not None:
                self.mx.random.seed(generation.seed)
            for step in self.mlx_lm.stream_generate(
                self.model,
                self.tokenizer,
                list(generation.prompt_ids),
                max_tokens=generation.max_new_tokens,
                sampler=sampler,
                logits_processors=processors or None,
            ):
                text += step.text
                tokens.append(int(step.token))
                last = step
                if stream is not None:
                    stream.add_text(step.text)  # StreamClosed when its caller stopped reading
                if generation.stop and not constraint and any(s in text for s in generation.stop):
                    break
        finish = getattr(last, "finish_reason", None) or "stop"
        if constraint is not None:
            stop_ids = self.stop_ids
            ended = any(token in stop_ids for token in tokens)
            closed = constraint.finish(0, tokens, stop_ids)
            finish = "stop" if ended or len(closed) > len([t for t in tokens if t not in stop_ids]) else finish
            text = self.tokenizer.decode(closed)
            return Generated(text, len(generation.prompt_ids), len(closed), finish)
        if generation.stop:
            text, stopped = cut_at_stop(text, generation.stop)
            finish = "stop" if stopped else finish
        completion = getattr(last, "generation_tokens", 0) if last is not None else 0
        return Generated(text, len(generation.prompt_ids), completion, finish)
