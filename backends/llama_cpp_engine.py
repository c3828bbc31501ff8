"""The llama.cpp engine of LocalSLM: a GGUF file run on llama.cpp's own quantised kernels.

Through llama-cpp-python's low-level API (the C API of `llama.h`), not its `Llama` class, because
concurrent callers share one context as parallel sequences: one worker thread owns the context
and, at every step, decodes one token for each running sequence together with the prompt tokens
of newly arrived ones (continuous batching, as `llama-server` does: `llama_cpp_batching`). A
caller that arrives while others are generating joins at the next step; nobody waits for a
batch to finish. A finished sequence leaves its cells in its slot, and a later prompt that
begins the same way (an optimiser's long instructions, a conversation's earlier turns) decodes
only what is new.

Sampling is done on each sequence's logits (`llama_cpp_sequence`): greedy by default, or
temperature / top-k / top-p with a random generator of the request's own, so a seeded answer
does not depend on what else ran beside it. `constrained=True` masks the logits with the same
xgrammar grammars as the other engines, built from the GGUF vocabulary, and the same closer ends
an answer cut off by its token budget; a schema is checked and compiled in the caller's thread
before its request is queued (`json_grammar.constrained_plan`), so a schema that cannot work
never costs a step, and neither does a request whose caller left before its first step.

A request with `Generation.on_text` streams: each token's text goes to its callback, from the
worker thread, as the token is accepted (held back while it may begin a stop string); a
callback that raises (`StreamClosed`: its caller stopped reading) ends that sequence at once,
frees its slot and fails its future with the error, while the others keep decoding.

`close()` answers every caller still waiting with `BackendUnavailable` (after the decoding step
in progress, so within a step's time), frees the model, and takes the engine out of LocalSLM's
registry: the next call to the model loads a fresh engine.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from myopto.errors import BackendUnavailable, BadRequest

from .generation import Generated, Generation, StreamedText
from .json_grammar import constrained_plan
from .llama_cpp_batching import EXACT_ROWS as EXACT_ROWS
from .llama_cpp_batching import MIN_REUSED_TOKENS as MIN_REUSED_TOKENS
from .llama_cpp_batching import ContinuousBatching
from .llama_cpp_model import LlamaModel
from .llama_cpp_model import usable_cores as usable_cores
from .llama_cpp_sequence import RunningSequence
from .model_files import ModelSource

INSTALL_HINT = (
    "pip install 'myopto[llama]' (llama-cpp-python compiles llama.cpp from source on first install: "
    "about 7 minutes on 2 cores; pip keeps the wheel for later installs)"
)


def available() -> bool:
    """Whether llama-cpp-python is installed (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppEngine(ContinuousBatching):
    """A GGUF model loaded with llama.cpp, shared by every role that names it."""

    def __init__(
        self,
        source: ModelSource,
        *,
        max_batch_size: int = 8,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        prompt_cache: bool = True,
    ) -> None:
        try:
            import llama_cpp
            import numpy as np
        except ImportError as error:
            raise BackendUnavailable(f"engine='llama.cpp' needs llama-cpp-python: {INSTALL_HINT}") from error
        if not source.gguf_file:
            raise BackendUnavailable(
                f"engine='llama.cpp' runs GGUF files and {source.label or source.path!r} is not one; give a .gguf "
                "path, or use engine='transformers' for hub ids and model folders"
            )
        self.source = source
        self.path = Path(source.path) / source.gguf_file
        loaded = LlamaModel(
            llama_cpp,
            self.path,
            source.label,
            sequences=max(1, int(max_batch_size)),
            n_ctx=n_ctx,
            n_threads=n_threads,
        )
        self.max_sequences = loaded.max_sequences
        self.n_ctx = loaded.n_ctx  # per sequence
        self._closing = False
        self._on_close: list[Callable[[], None]] = []  # LocalSLM's registry forgets the engine
        super().__init__(loaded, np, prompt_cache)
        self._worker = threading.Thread(target=self._loop, name=f"myopto-llama.cpp:{source.label}", daemon=True)
        self._worker.start()

    # -- prompts (the model's vocabulary) --------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self.loaded.tokenize(text, add_special=add_special)

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens): how long an answer is."""
        return self.loaded.text_ids(text)

    def detokenize(self, tokens: list[int]) -> str:
        return self.loaded.detokenize(tokens)

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (b"" for control tokens such as end-of-turn)."""
        return self.loaded.piece(token)

    def prompt_ids(self, messages: list[dict[str, Any]]) -> tuple[int, ...]:
        """Token ids of the chat prompt (the GGUF's chat template, or a plain format without one)."""
        return self.loaded.prompt_ids(messages)

    # -- generation ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once `close()` began: no request is taken any more."""
        return self._closing

    def generate(self, generation: Generation) -> Generated:
        """Generate one answer; concurrent callers share the context's decoding steps."""
        return self.submit(generation).result()

    def submit(
        self, generation: Generation, future: concurrent.futures.Future[Generated] | None = None
    ) -> concurrent.futures.Future[Generated]:
        """Queue one answer and return its future at once (asyncio awaits it without a thread).

        Cancelling the future stops its decoding at the next step, and a request not started
        yet is dropped without costing one. A caller that may leave while its grammar compiles
        passes a `future` of its own and cancels it: the request is then never queued.
        A constrained schema that cannot work raises `InvalidRequest` here, before anything is queued."""
        if self._closing:
            raise self.loaded.closed_error()
        self.loaded.check_open()
        prompt = len(generation.prompt_ids)
        if prompt == 0:
            raise BadRequest("the prompt is empty: give at least one message with content", retryable=False)
        if prompt >= self.n_ctx:
            raise BadRequest(
                f"the prompt has {prompt} tokens and the model's context holds {self.n_ctx}: shorten the messages "
                "or give LocalSLM a larger n_ctx",
                retryable=False,
            )
        future = future if future is not None else concurrent.futures.Future()
        sequence = RunningSequence(generation, future, budget=min(generation.max_new_tokens, self.n_ctx - prompt))
        if generation.constrained:
            sequence.plan = constrained_plan(
                self._grammars,
                generation.json_schema or None,
                self.text_ids,
                sequence.budget,
                free_text=generation.free_text,
            )
            sequence.matcher = self.grammars.xgr.GrammarMatcher(sequence.plan.grammar)
        if generation.stop and not generation.constrained:
            sequence.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if generation.on_text is not None:
            stop = () if generation.constrained else generation.stop
            sequence.streamed = StreamedText(generation.on_text, stop, self.detokenize)
        if generation.temperature > 0:
            sequence.rng = self.np.random.default_rng(generation.seed)
        with self._state:
            if self._closing:
                raise self.loaded.closed_error()
            if future.cancelled():  # its caller left while the grammar compiled
                self.dropped += 1
                return future
            self._queue.put(sequence)
        return future

    def close(self) -> None:
        """Stop the worker and free the context and the model. Every caller still waiting gets
        `BackendUnavailable` once the step in progress ends; later calls raise it at once; the
        engine leaves LocalSLM's registry, so the next call to the model loads a fresh one."""
        with self._state:
            first = not self._closing
            self._closing = True
            if first:
                self._queue.put(None)
        if threading.current_thread() is not self._worker:
            self._worker.join()
        self.loaded.free()
        if first:
            for forget in self._on_close:
                forget()

    def on_close(self, forget: Callable[[], None]) -> None:
        """Call `forget()` when the engine closes (the registry frees its slot)."""
        self._on_close.append(forget)
