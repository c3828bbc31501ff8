"""Continuous batching over one llama.cpp context: the worker side of `LlamaCppEngine`.

One worker thread owns the context and, at every step, decodes one token for each running
sequence together with the prompt tokens of newly arrived ones, as `llama-server` does. A
request that arrives while others are generating joins at the next step; nobody waits for a
batch to finish. A finished sequence leaves its cells in its slot, and a later prompt that
begins the same way (an optimiser's long instructions, a conversation's earlier turns) decodes
only what is new. A request whose caller left is dropped before its next step.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Any

from myopto.errors import BackendError, StreamClosed

from .json_grammar import GrammarCache, LazyGrammars
from .llama_cpp_model import LlamaModel
from .llama_cpp_sequence import RunningSequence

# Kept cells of a longer prompt are reused for a shared beginning at least this long: the rest of
# the prompt is then decoded in other shapes than a cold prompt (other attention kernels, see
# EXACT_ROWS), which can turn a near-tie the other way; a long beginning saves that risk's worth.
MIN_REUSED_TOKENS = 256
# Below this many rows of one sequence in a step, llama.cpp's CPU flash attention computes each
# row alone, in the same order (its tile is 64 query rows: GGML_FA_TILE_Q), and every other
# operation of the model is row by row. A prompt shorter than this is computed in the same shapes
# cold or from kept cells that were too, so its answers are a cold start's exactly, and a shared
# beginning of any length is reused: the chat template, a system prompt, a question's first words.
# "Row by row" holds for the matrix kernels of the embedded model's weights on x86 (tested: warm
# answers equal cold ones); a weight layout whose kernel takes several rows at once may sum in
# another order for other row counts.
EXACT_ROWS = 64


class ContinuousBatching:
    """The requests of one `LlamaModel` and the loop that decodes them (`_loop`, run by the
    engine's worker thread); `prompt_cache` False decodes every prompt whole."""

    def __init__(self, loaded: LlamaModel, np: Any, prompt_cache: bool) -> None:
        self.loaded = loaded
        self.np = np
        self._grammars = LazyGrammars(
            lambda: GrammarCache.for_pieces(
                [loaded.piece(t) for t in range(loaded.n_vocab)], sorted(loaded.stop_ids), loaded.text_ids
            )
        )
        # Orders submissions against close(): nothing is queued after the closing mark.
        self._state = threading.Lock()
        self._queue: queue.Queue[RunningSequence | None] = queue.Queue()
        self._waiting: collections.deque[RunningSequence] = collections.deque()
        self._running: list[RunningSequence] = []
        self._free_ids = list(range(loaded.max_sequences))
        # Tokens whose cells each slot still holds: a finished sequence leaves its prompt and
        # answer there, and the next request with the same beginning decodes only the rest.
        self._kept: list[list[int]] = [[] for _ in range(loaded.max_sequences)]
        # Whether each slot's kept cells were all written by steps of fewer than EXACT_ROWS of its rows.
        self._exact: list[bool] = [True] * loaded.max_sequences
        self.prompt_cache = prompt_cache
        self.reused_tokens = 0  # prompt tokens served from kept cells, for tests and benchmarks
        self.steps = 0
        self.batch_sizes: list[int] = []  # sequences per step, for tests and benchmarks
        self.admitted = 0  # requests that started decoding
        self.dropped = 0  # requests dropped unstarted because their caller had left

    @property
    def grammars(self) -> GrammarCache:
        """Compiled JSON grammars over this GGUF's vocabulary (built on the first constrained call)."""
        return self._grammars()

    def _loop(self) -> None:
        while True:
            block = not self._running and not self._waiting
            try:
                item = self._queue.get() if block else self._queue.get_nowait()
                while True:
                    if item is None:  # closing: nobody is left waiting (nothing is queued after this mark)
                        closed = self.loaded.closed_error()
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
                except Exception as error:  # noqa: BLE001 - a failed decode fails the sequences it carried, not the engine
                    for sequence in list(self._running):
                        self._end(sequence, error)

    def _admit(self) -> None:
        """Start waiting requests while a sequence slot is free: in the free slot whose kept
        cells may serve the longest beginning of the prompt (then the longest shared beginning,
        then the lowest id)."""
        for gone in [s for s in self._waiting if s.future.cancelled()]:  # their callers left: no step for them
            self._waiting.remove(gone)
            with self._state:
                self.dropped += 1
        while self._waiting and self._free_ids:
            sequence = self._waiting.popleft()
            prompt = sequence.generation.prompt_ids
            # the slot whose kept cells may serve most of this prompt; among equals, the one
            # sharing the longest beginning (a similar prompt's cells are replaced, others kept)
            shared = {
                slot: _shared_prefix(self._kept[slot], prompt) if self.prompt_cache else 0 for slot in self._free_ids
            }
            reusable = {slot: self._reusable(slot, prompt, shared[slot]) for slot in self._free_ids}
            slot = max(self._free_ids, key=lambda s: (reusable[s], shared[s], -s))
            self._free_ids.remove(slot)
            reuse = reusable[slot]
            llama, memory = self.loaded.llama, self.loaded.memory
            if not llama.llama_memory_seq_rm(memory, slot, reuse, -1):
                llama.llama_memory_seq_rm(memory, slot, -1, -1)  # a model whose cells cannot be cut
                reuse = 0
            del self._kept[slot][reuse:]
            if reuse == 0:
                self._exact[slot] = True
            sequence.seq_id, sequence.prefilled = slot, reuse
            self.reused_tokens += reuse
            self.admitted += 1
            self._running.append(sequence)
        # A batch whose sequence ids are out of order decoded a fifth slower here (llama.cpp
        # regroups it by stream): steps list their sequences in id order.
        self._running.sort(key=lambda s: s.seq_id)

    def _reusable(self, slot: int, prompt: tuple[int, ...], shared: int) -> int:
        """How many of `prompt`'s first tokens `slot`'s kept cells may serve, given the `shared`
        beginning: at least MIN_REUSED_TOKENS, or any length for a prompt under EXACT_ROWS tokens
        when the slot's cells were all written in steps of fewer rows (see EXACT_ROWS); else 0.
        The last prompt token is decoded again, for its logits. (With `prompt_cache` off every
        `shared` is 0.)"""
        reuse = min(shared, len(prompt) - 1)
        if reuse >= MIN_REUSED_TOKENS or (len(prompt) < EXACT_ROWS and self._exact[slot]):
            return reuse
        return 0

    def _step(self) -> None:
        """One `llama_decode`: the next token of every generating sequence and as many prompt
        tokens as fit; then sample for each sequence whose logits came out."""
        loaded = self.loaded
        for gone in [s for s in self._running if s.future.cancelled()]:  # its caller stopped waiting
            self._end(gone, "cancelled")
        if not self._running:
            return
        outputs: list[RunningSequence] = []  # the sequences whose logits this step gives, in batch order
        count = 0
        for sequence in self._running:
            prompt = sequence.generation.prompt_ids
            if sequence.prefilled < len(prompt):
                continue
            self._add(count, sequence.tokens[-1], sequence.position - 1, sequence.seq_id, True)
            outputs.append(sequence)
            count += 1
        for sequence in self._running:
            prompt = sequence.generation.prompt_ids
            start = count
            while sequence.prefilled < len(prompt) and count < loaded.n_batch:
                last = sequence.prefilled == len(prompt) - 1
                self._add(count, prompt[sequence.prefilled], sequence.prefilled, sequence.seq_id, last)
                if last:
                    outputs.append(sequence)
                sequence.prefilled += 1
                count += 1
            if count - start >= EXACT_ROWS:
                self._exact[sequence.seq_id] = False
        loaded.batch.n_tokens = count
        status = loaded.llama.llama_decode(loaded.ctx, loaded.batch)
        if status != 0:
            raise BackendError(
                f"llama.cpp could not decode a batch of {count} tokens (status {status})", retryable=True
            )
        self.steps += 1
        self.batch_sizes.append(len(outputs))
        if not outputs:  # a step of a long prompt's first tokens only
            return
        # The step's logits, one row per output in batch order, read in place (one view per step).
        logits = self.np.ctypeslib.as_array(
            loaded.llama.llama_get_logits(loaded.ctx), shape=(len(outputs), loaded.n_vocab)
        )
        for row, sequence in enumerate(outputs):
            try:
                finish = sequence.take(self._choose(sequence, logits[row]), loaded.stop_ids, loaded.piece)
                if finish is not None:
                    self._end(sequence, finish)
            except Exception as error:  # noqa: BLE001 - this sequence's sampling or grammar failed: it ends alone
                self._end(sequence, error)

    def _add(self, index: int, token: int, position: int, seq_id: int, wants_logits: bool) -> None:
        batch = self.loaded.batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = wants_logits
        self._kept[seq_id].append(token)  # positions run 0, 1, 2... in every slot

    def _choose(self, sequence: RunningSequence, logits: Any) -> int:
        return sequence.choose(self.np, logits, self._grammars, self.loaded.n_vocab)

    def _end(self, sequence: RunningSequence, outcome: str | BaseException) -> None:
        """Free the sequence's slot (when it had one), and answer its caller. Its cells stay for
        a later prompt with the same beginning, unless it failed (then they are dropped; a stream
        its caller closed did not fail)."""
        if sequence in self._running:
            if isinstance(outcome, BaseException) and not isinstance(outcome, StreamClosed):
                self.loaded.llama.llama_memory_seq_rm(self.loaded.memory, sequence.seq_id, -1, -1)
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
            sequence.future.set_result(sequence.answer(outcome, self._grammars, self.loaded.detokenize))
        except BaseException as error:  # noqa: BLE001 - the caller gets whatever went wrong
            sequence.future.set_exception(error)


def _shared_prefix(kept: list[int], prompt: tuple[int, ...]) -> int:
    """How many tokens `prompt` begins with that `kept` begins with too."""
    count = 0
    for a, b in zip(kept, prompt, strict=False):  # of different lengths: the shorter ends the count
        if a != b:
            break
        count += 1
    return count
