"""The llama.cpp engine of LocalSLM: a GGUF file run on llama.cpp's own quantised kernels.

Through llama-cpp-python's low-level API (the C API of `llama.h`), not its `Llama` class, because
concurrent callers share one context as parallel sequences: one worker thread owns the context
and, at every step, decodes one token for each running sequence together with the prompt tokens
of newly arrived ones (continuous batching, as `llama-server` does). A caller that arrives while
others are generating joins at the next step; nobody waits for a batch to finish. A finished
sequence leaves its cells in its slot, and a later prompt that begins the same way (an
optimiser's long instructions, a conversation's earlier turns) decodes only what is new.

Sampling is done here on each sequence's logits: greedy by default, or temperature / top-k /
top-p with a random generator of the request's own, so a seeded answer does not depend on
what else ran beside it. `constrained=True` masks the logits with the same xgrammar grammars
as the other engines, built from the GGUF vocabulary, and the same closer ends an answer cut
off by its token budget; a schema is checked and compiled in the caller's thread before its
request is queued (`json_grammar.constrained_plan`), so a schema that cannot work never costs a
step, and neither does a request whose caller left before its first step.

`close()` answers every caller still waiting with `BackendUnavailable` (after the decoding step
in progress, so within a step's time), frees the model, and takes the engine out of LocalSLM's
registry: the next call to the model loads a fresh engine.
"""

from __future__ import annotations

import codecs
import collections
import concurrent.futures
import ctypes
import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from myopto.backends.generation import Generated, Generation, cut_at_stop, plain_prompt, text_messages
from myopto.backends.json_grammar import GrammarCache, LazyGrammars, Plan, constrained_plan
from myopto.backends.model_files import ModelSource
from myopto.errors import BackendError, BackendUnavailable, BadRequest

INSTALL_HINT = (
    "pip install 'myopto[llama]' (llama-cpp-python compiles llama.cpp from source on first install: "
    "about 7 minutes on 2 cores; pip keeps the wheel for later installs)"
)
DEFAULT_CONTEXT = 4096  # tokens per sequence (prompt and answer), unless the model was trained on fewer
# Kept cells are reused only for a shared beginning at least this long. Decoding a short one
# again costs little, and a reused prefix is computed in other shapes than a cold prompt, which
# can turn a near-tie the other way: short prompts keep the answers of a cold start exactly.
MIN_REUSED_TOKENS = 256


def available() -> bool:
    """Whether llama-cpp-python is installed (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers narrow), else all."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS has no affinity call
        return os.cpu_count() or 1


@dataclasses.dataclass(eq=False)
class _Sequence:
    """One request while it runs: its slot in the context, its tokens so far, how it samples."""

    generation: Generation
    future: concurrent.futures.Future[Generated]
    budget: int
    seq_id: int = -1
    prefilled: int = 0  # prompt tokens already decoded
    tokens: list[int] = dataclasses.field(default_factory=list)
    text: str = ""  # decoded so far, kept only when stop strings are watched
    decoder: Any = None
    matcher: Any = None
    plan: Plan | None = None
    rng: Any = None

    @property
    def position(self) -> int:
        return len(self.generation.prompt_ids) + len(self.tokens)


class LlamaCppEngine:
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
        self.llama = llama_cpp
        self.np = np
        self.source = source
        self.path = Path(source.path) / source.gguf_file
        quiet = logging.getLogger("llama-cpp-python")  # llama.cpp's own log lines go through this logger
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self.model:
            raise BackendUnavailable(f"llama.cpp could not load {self.path} (not a GGUF model it supports?)")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.max_sequences = max(1, int(max_batch_size))
        trained = int(llama_cpp.llama_model_n_ctx_train(self.model)) or DEFAULT_CONTEXT
        self.n_ctx = int(n_ctx) if n_ctx else min(trained, DEFAULT_CONTEXT)  # per sequence
        self.n_batch = max(512, self.max_sequences)  # a step holds one token of every running sequence
        threads = int(n_threads) if n_threads else usable_cores()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * self.max_sequences
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = self.max_sequences
        params.n_threads = params.n_threads_batch = threads
        # Each sequence keeps cells of its own. In one shared pool, removing a finished sequence
        # changed the logits of the others (by up to 0.6 here), and greedy answers with them.
        params.kv_unified = False
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise BackendUnavailable(
                f"llama.cpp could not create a context of {self.max_sequences} x {self.n_ctx} tokens for {self.path}; "
                "lower n_ctx or max_batch_size"
            )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.stop_ids = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)}
        # Held while the vocabulary is read in any thread, so close() never frees it under a reader.
        self._use = threading.RLock()
        # Orders submissions against close(): nothing is queued after the closing mark.
        self._state = threading.Lock()
        self._closing = False
        self._on_close: list[Callable[[], None]] = []  # LocalSLM's registry forgets the engine
        self.chat_format = self._chat_format()
        self._grammars = LazyGrammars(
            lambda: GrammarCache.for_pieces(
                [self.piece(t) for t in range(self.n_vocab)], sorted(self.stop_ids), self.text_ids
            )
        )
        self._queue: queue.Queue[_Sequence | None] = queue.Queue()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._free_ids = list(range(self.max_sequences))
        # Tokens whose cells each slot still holds: a finished sequence leaves its prompt and
        # answer there, and the next request with the same beginning decodes only the rest.
        self._kept: list[list[int]] = [[] for _ in range(self.max_sequences)]
        self.prompt_cache = prompt_cache
        self.reused_tokens = 0  # prompt tokens served from kept cells, for tests and benchmarks
        self.steps = 0
        self.batch_sizes: list[int] = []  # sequences per step, for tests and benchmarks
        self.admitted = 0  # requests that started decoding
        self.dropped = 0  # requests dropped unstarted because their caller had left
        self._worker = threading.Thread(target=self._loop, name=f"myopto-llama.cpp:{source.label}", daemon=True)
        self._worker.start()

    # -- prompts -----------------------------------------------------------------------------
    def _token_text(self, token: int) -> str:
        return bytes(self.llama.llama_vocab_get_text(self.vocab, token) or b"").decode("utf-8", "replace")

    def _chat_format(self) -> Any:
        """The GGUF's own chat template (Jinja, rendered as transformers renders it), or None."""
        template = self.llama.llama_model_chat_template(self.model, None)
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        bos = self.llama.llama_vocab_bos(self.vocab)
        eos = self.llama.llama_vocab_eos(self.vocab)
        return Jinja2ChatFormatter(
            template=template.decode("utf-8"),
            eos_token=self._token_text(eos) if eos >= 0 else "",
            bos_token=self._token_text(bos) if bos >= 0 else "",
        )

    @property
    def closed(self) -> bool:
        """True once `close()` began: no request is taken any more."""
        return self._closing

    def _closed_error(self) -> BackendUnavailable:
        return BackendUnavailable(f"the llama.cpp engine for {self.source.label} was closed")

    def _check_open(self) -> None:
        """After `close()` the model is freed: touching it would crash the process."""
        if self.ctx is None:
            raise self._closed_error()

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        with self._use:
            self._check_open()
            while True:
                buffer = (self.llama.llama_token * room)()
                count = self.llama.llama_tokenize(self.vocab, data, len(data), buffer, room, add_special, True)
                if count >= 0:
                    return list(buffer[:count])
                room = -count

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens): how long an answer is."""
        return self.tokenize(text, add_special=False)

    def detokenize(self, tokens: list[int]) -> str:
        if not tokens:
            return ""
        array = (self.llama.llama_token * len(tokens))(*tokens)
        room = 8 * len(tokens) + 16
        with self._use:
            self._check_open()
            while True:
                buffer = ctypes.create_string_buffer(room)
                count = self.llama.llama_detokenize(self.vocab, array, len(tokens), buffer, room, True, False)
                if count >= 0:
                    return buffer.raw[:count].decode("utf-8", "replace")
                room = -count

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (b"" for control tokens such as end-of-turn)."""
        with self._use:
            self._check_open()
            buffer = ctypes.create_string_buffer(64)
            count = self.llama.llama_token_to_piece(self.vocab, token, buffer, 64, 0, False)
            if count < 0:
                buffer = ctypes.create_string_buffer(-count)
                count = self.llama.llama_token_to_piece(self.vocab, token, buffer, -count, 0, False)
            return buffer.raw[:count]

    def prompt_ids(self, messages: list[dict[str, Any]]) -> tuple[int, ...]:
        """Token ids of the chat prompt (the GGUF's chat template, or a plain format without one)."""
        messages = text_messages(messages)
        if self.chat_format is not None:
            rendered = self.chat_format(messages=messages)
            return tuple(self.tokenize(rendered.prompt, add_special=not rendered.added_special))
        return tuple(self.tokenize(plain_prompt(messages), add_special=True))

    # -- grammars ----------------------------------------------------------------------------
    @property
    def grammars(self) -> GrammarCache:
        """Compiled JSON grammars over this GGUF's vocabulary (built on the first constrained call)."""
        return self._grammars()

    # -- generation --------------------------------------------------------------------------
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
            raise self._closed_error()
        self._check_open()
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
        sequence = _Sequence(generation, future, budget=min(generation.max_new_tokens, self.n_ctx - prompt))
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
        if generation.temperature > 0:
            sequence.rng = self.np.random.default_rng(generation.seed)
        with self._state:
            if self._closing:
                raise self._closed_error()
            if future.cancelled():  # its caller left while the grammar compiled
                self.dropped += 1
                return future
            self._queue.put(sequence)
        return future

    def _loop(self) -> None:
        while True:
            block = not self._running and not self._waiting
            try:
                item = self._queue.get() if block else self._queue.get_nowait()
                while True:
                    if item is None:  # closing: nobody is left waiting (nothing is queued after this mark)
                        closed = self._closed_error()
                        for sequence in [*self._running, *self._waiting]:
                            self._end(sequence, closed)
                        return
                    self._waiting.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            self._admit()
            if self._running:
                try:
                    self._step()
                except Exception as error:  # a failed decode fails the sequences it carried, not the engine
                    for sequence in list(self._running):
                        self._end(sequence, error)

    def _admit(self) -> None:
        """Start waiting requests while a sequence slot is free: in the free slot whose kept
        cells share the longest beginning with the prompt (the lowest id among equals)."""
        for gone in [s for s in self._waiting if s.future.cancelled()]:  # their callers left: no step for them
            self._waiting.remove(gone)
            with self._state:
                self.dropped += 1
        while self._waiting and self._free_ids:
            sequence = self._waiting.popleft()
            prompt = sequence.generation.prompt_ids
            shared = {
                slot: _shared_prefix(self._kept[slot], prompt) if self.prompt_cache else 0 for slot in self._free_ids
            }
            slot = max(self._free_ids, key=lambda s: (shared[s], -s))
            self._free_ids.remove(slot)
            reuse = min(shared[slot], len(prompt) - 1)  # the last prompt token is decoded again, for its logits
            if reuse < MIN_REUSED_TOKENS:
                reuse = 0
            if not self.llama.llama_memory_seq_rm(self.memory, slot, reuse, -1):
                self.llama.llama_memory_seq_rm(self.memory, slot, -1, -1)  # a model whose cells cannot be cut
                reuse = 0
            del self._kept[slot][reuse:]
            sequence.seq_id, sequence.prefilled = slot, reuse
            self.reused_tokens += reuse
            self.admitted += 1
            self._running.append(sequence)
        # A batch whose sequence ids are out of order decoded a fifth slower here (llama.cpp
        # regroups it by stream): steps list their sequences in id order.
        self._running.sort(key=lambda s: s.seq_id)

    def _step(self) -> None:
        """One `llama_decode`: the next token of every generating sequence and as many prompt
        tokens as fit; then sample for each sequence whose logits came out."""
        batch, room = self.batch, self.n_batch
        for gone in [s for s in self._running if s.future.cancelled()]:  # its caller stopped waiting
            self._end(gone, "cancelled")
        if not self._running:
            return
        outputs: list[tuple[_Sequence, int]] = []
        count = 0
        for sequence in self._running:
            prompt = sequence.generation.prompt_ids
            if sequence.prefilled < len(prompt):
                continue
            self._add(count, sequence.tokens[-1], sequence.position - 1, sequence.seq_id, True)
            outputs.append((sequence, count))
            count += 1
        for sequence in self._running:
            prompt = sequence.generation.prompt_ids
            while sequence.prefilled < len(prompt) and count < room:
                last = sequence.prefilled == len(prompt) - 1
                self._add(count, prompt[sequence.prefilled], sequence.prefilled, sequence.seq_id, last)
                if last:
                    outputs.append((sequence, count))
                sequence.prefilled += 1
                count += 1
        batch.n_tokens = count
        status = self.llama.llama_decode(self.ctx, batch)
        if status != 0:
            raise BackendError(
                f"llama.cpp could not decode a batch of {count} tokens (status {status})", retryable=True
            )
        self.steps += 1
        self.batch_sizes.append(len(outputs))
        for sequence, index in outputs:
            try:
                logits = self.np.ctypeslib.as_array(
                    self.llama.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,)
                )
                self._advance(sequence, self._choose(sequence, logits))
            except Exception as error:  # this sequence's sampling or grammar failed: it ends alone
                self._end(sequence, error)

    def _add(self, index: int, token: int, position: int, seq_id: int, wants_logits: bool) -> None:
        batch = self.batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = wants_logits
        self._kept[seq_id].append(token)  # positions run 0, 1, 2... in every slot

    def _choose(self, sequence: _Sequence, logits: Any) -> int:
        np = self.np
        g = sequence.generation
        if sequence.matcher is not None:
            import torch

            grammars = self.grammars
            mask = grammars.xgr.allocate_token_bitmask(1, self.n_vocab)
            sequence.matcher.fill_next_token_bitmask(mask, 0)
            scores = torch.from_numpy(logits.copy())[None]
            grammars.xgr.apply_token_bitmask_inplace(scores, mask)
            logits = scores[0].numpy()
        if g.repetition_penalty and g.repetition_penalty != 1.0:
            logits = logits.copy()
            seen = np.fromiter(set(g.prompt_ids) | set(sequence.tokens), dtype=np.int64)
            values = logits[seen]
            logits[seen] = np.where(values > 0, values / g.repetition_penalty, values * g.repetition_penalty)
        if sequence.rng is None:
            return int(np.argmax(logits))
        return _sample(np, logits, g.temperature, g.top_k, g.top_p, sequence.rng)

    def _advance(self, sequence: _Sequence, token: int) -> None:
        g = sequence.generation
        if token in self.stop_ids:
            self._end(sequence, "stop")
            return
        sequence.tokens.append(token)
        if sequence.matcher is not None:
            sequence.matcher.accept_token(token)
        if sequence.decoder is not None:
            fresh = sequence.decoder.decode(self.piece(token))
            sequence.text += fresh
            longest = max(len(s) for s in g.stop)
            if any(s in sequence.text[-(longest + len(fresh)) :] for s in g.stop):
                self._end(sequence, "stop")
                return
        if len(sequence.tokens) >= sequence.budget:
            self._end(sequence, "length")

    def _end(self, sequence: _Sequence, outcome: str | BaseException) -> None:
        """Free the sequence's slot (when it had one), and answer its caller. Its cells stay for
        a later prompt with the same beginning, unless it failed (then they are dropped)."""
        if sequence in self._running:
            if isinstance(outcome, BaseException):
                self.llama.llama_memory_seq_rm(self.memory, sequence.seq_id, -1, -1)
                self._kept[sequence.seq_id].clear()
            self._running.remove(sequence)
            self._free_ids.append(sequence.seq_id)
        elif sequence in self._waiting:
            self._waiting.remove(sequence)
        if sequence.future.cancelled():
            return
        if isinstance(outcome, BaseException):
            sequence.future.set_exception(outcome)
            return
        try:
            sequence.future.set_result(self._answer(sequence, outcome))
        except BaseException as error:  # noqa: BLE001 - the caller gets whatever went wrong
            sequence.future.set_exception(error)

    def _answer(self, sequence: _Sequence, finish: str) -> Generated:
        g, tokens = sequence.generation, sequence.tokens
        if sequence.matcher is not None and sequence.plan is not None and not sequence.matcher.is_terminated():
            closing, replaced = self.grammars.close(sequence.matcher, sequence.plan)
            tokens, finish = (closing if replaced else tokens + closing), ("stop" if closing else finish)
        text = self.detokenize(tokens)
        if g.stop and not g.constrained:
            text, stopped = cut_at_stop(text, g.stop)
            finish = "stop" if stopped else finish
        return Generated(text, len(g.prompt_ids), len(tokens), finish)

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
        with self._use:  # waits for any thread still reading the vocabulary
            if self.ctx:
                ctx, self.ctx = self.ctx, None
                self.llama.llama_batch_free(self.batch)
                self.llama.llama_free(ctx)
                self.llama.llama_model_free(self.model)
        if first:
            for forget in self._on_close:
                forget()

    def on_close(self, forget: Callable[[], None]) -> None:
        """Call `forget()` when the engine closes (the registry frees its slot)."""
        self._on_close.append(forget)


def _shared_prefix(kept: list[int], prompt: tuple[int, ...]) -> int:
    """How many tokens `prompt` begins with that `kept` begins with too."""
    count = 0
    for a, b in zip(kept, prompt):
        if a != b:
            break
        count += 1
    return count


def _sample(np: Any, logits: Any, temperature: float, top_k: int | None, top_p: float | None, rng: Any) -> int:
    """A token drawn from softmax(logits / temperature), within top-k and the top-p nucleus."""
    scaled = logits.astype(np.float64) / temperature
    if top_k and 0 < top_k < scaled.size:
        kth = np.partition(scaled, -top_k)[-top_k]
        scaled[scaled < kth] = -np.inf
    scaled -= scaled.max()
    probs = np.exp(scaled)
    probs /= probs.sum()
    if top_p is not None and 0 < top_p < 1:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < top_p  # the smallest set reaching top_p
        trimmed = np.zeros_like(probs)
        trimmed[order[keep]] = probs[order[keep]]
        probs = trimmed / trimmed.sum()
    return int(rng.choice(probs.size, p=probs))
