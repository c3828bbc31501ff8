"""A GGUF model loaded with llama.cpp for `LlamaCppEngine`: the weights, one context with a slot
of cells per parallel sequence, the batch a step fills, and the vocabulary (tokens to text and
back, the GGUF's own chat template).

`free()` releases them all once no thread is reading the vocabulary; touching a freed model
would crash the process, so every vocabulary call after it raises `BackendUnavailable`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path
from typing import Any

from myopto.errors import BackendUnavailable

from .generation import plain_prompt, text_messages

DEFAULT_CONTEXT = 4096  # tokens per sequence (prompt and answer), unless the model was trained on fewer


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers narrow), else all."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS has no affinity call
        return os.cpu_count() or 1


class LlamaModel:
    """The GGUF file at `path` and a context of `sequences` slots of `n_ctx` cells each (`n_ctx`:
    None for the model's training context up to `DEFAULT_CONTEXT`; `n_threads`: None for every
    usable core). `label` names the model in errors."""

    def __init__(
        self, llama: Any, path: Path, label: str, *, sequences: int, n_ctx: int | None, n_threads: int | None
    ) -> None:
        self.llama = llama
        self.path = path
        self.label = label
        quiet = logging.getLogger("llama-cpp-python")  # llama.cpp's own log lines go through this logger
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.ERROR)
        llama.llama_backend_init()
        model_params = llama.llama_model_default_params()
        self.model = llama.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self.model:
            raise BackendUnavailable(f"llama.cpp could not load {self.path} (not a GGUF model it supports?)")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self.vocab))
        self.max_sequences = sequences
        trained = int(llama.llama_model_n_ctx_train(self.model)) or DEFAULT_CONTEXT
        self.n_ctx = int(n_ctx) if n_ctx else min(trained, DEFAULT_CONTEXT)  # per sequence
        self.n_batch = max(512, sequences)  # a step holds one token of every running sequence
        threads = int(n_threads) if n_threads else usable_cores()
        params = llama.llama_context_default_params()
        params.n_ctx = self.n_ctx * sequences
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = sequences
        params.n_threads = params.n_threads_batch = threads
        # Each sequence keeps cells of its own. In one shared pool, removing a finished sequence
        # changed the logits of the others (by up to 0.6 here), and greedy answers with them.
        params.kv_unified = False
        self.ctx: Any = llama.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama.llama_model_free(self.model)
            raise BackendUnavailable(
                f"llama.cpp could not create a context of {sequences} x {self.n_ctx} tokens for {self.path}; "
                "lower n_ctx or max_batch_size"
            )
        self.memory = llama.llama_get_memory(self.ctx)
        self.batch = llama.llama_batch_init(self.n_batch, 0, 1)
        self.stop_ids = {t for t in range(self.n_vocab) if llama.llama_vocab_is_eog(self.vocab, t)}
        # Held while the vocabulary is read in any thread, so free() never frees it under a reader.
        self._use = threading.RLock()
        self.chat_format = self._chat_format()

    def closed_error(self) -> BackendUnavailable:
        """What a call to a closed engine raises."""
        return BackendUnavailable(f"the llama.cpp engine for {self.label} was closed")

    def check_open(self) -> None:
        """After `free()` the model is gone: touching it would crash the process."""
        if self.ctx is None:
            raise self.closed_error()

    def free(self) -> None:
        """Free the batch, the context and the model, once no thread reads the vocabulary (once)."""
        with self._use:  # waits for any thread still reading the vocabulary
            if self.ctx:
                ctx, self.ctx = self.ctx, None
                self.llama.llama_batch_free(self.batch)
                self.llama.llama_free(ctx)
                self.llama.llama_model_free(self.model)

    # -- the vocabulary ------------------------------------------------------------------------
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

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        with self._use:
            self.check_open()
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
            self.check_open()
            while True:
                buffer = ctypes.create_string_buffer(room)
                count = self.llama.llama_detokenize(self.vocab, array, len(tokens), buffer, room, True, False)
                if count >= 0:
                    return buffer.raw[:count].decode("utf-8", "replace")
                room = -count

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for (b"" for control tokens such as end-of-turn)."""
        with self._use:
            self.check_open()
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
