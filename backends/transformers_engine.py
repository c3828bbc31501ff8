"""The transformers engine of LocalSLM: loads a model once per process, renders chat prompts,
and runs batches of requests through one padded `generate`.

A streamed request (`Generation.on_text`) gets each token's text as its row decodes it (from a
stopping criterion, called by `generate` after every step); a callback that raises
(`StreamClosed`) stops that row and fails that request alone, the other rows go on."""

from __future__ import annotations

import logging
import threading
from typing import Any

from myopto.errors import BackendUnavailable

from .batcher import Batcher
from .generation import Generated, Generation, StreamedText, cut_at_stop, plain_prompt, text_messages
from .json_grammar import GrammarCache, JsonConstraint, LazyGrammars, constrained_plan
from .model_files import ModelSource

_log = logging.getLogger("myopto.local")


def pick_device(device: str | None) -> str:
    """`auto` (or None) picks cuda, then mps, then cpu."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return device


def pick_dtype(dtype: str | None, device: str) -> Any:
    import torch

    if dtype in (None, "auto"):
        return torch.float16 if device == "cuda" else torch.float32
    value = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise BackendUnavailable(f"torch_dtype {dtype!r} is not a torch dtype; use float32, float16 or bfloat16")
    return value


class TransformersEngine:
    """A loaded model and tokenizer, shared by every role that names the same model."""

    def __init__(
        self,
        source: ModelSource,
        *,
        device: str | None = None,
        torch_dtype: str | None = None,
        trust_remote_code: bool = False,
        max_batch_size: int = 8,
        batch_wait: float = 0.01,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as error:
            raise BackendUnavailable("LocalSLM needs torch and transformers: pip install 'myopto[local]'") from error
        self.torch = torch
        self.source = source
        self.converted_from_gguf = False  # True when this load read the GGUF itself (no whole copy yet)
        self.device = pick_device(device)
        self.dtype = pick_dtype(torch_dtype, self.device)
        self.tokenizer, self.model = self._load(source, AutoTokenizer, AutoModelForCausalLM, trust_remote_code)
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop_ids = self._stop_ids()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self._generate_lock = threading.Lock()
        self._grammars = LazyGrammars(
            lambda: GrammarCache.for_tokenizer(self.tokenizer, self.model.get_output_embeddings().weight.shape[0])
        )
        self.batcher: Batcher[Generation, Generated] = Batcher(
            self.run_batch,
            max_batch_size=max_batch_size,
            max_wait=batch_wait,
            key=Generation.batch_key,
            name=f"myopto-batcher:{source.label}",
        )

    def _load(self, source: ModelSource, tokenizers: Any, models: Any, trust_remote_code: bool) -> tuple[Any, Any]:
        """(tokenizer, model). A GGUF file is read from its converted copy when one is whole, and
        converted (slowly, by transformers) and kept as a copy when not."""
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if not source.gguf_file:
            return source.load(tokenizers.from_pretrained, **kwargs), source.load(
                models.from_pretrained, dtype=self.dtype, **kwargs
            )
        from pathlib import Path

        from myopto.settings import model_dir

        from .converted_copy import ConvertedCopy

        copy = ConvertedCopy(Path(source.path) / source.gguf_file, model_dir())
        if copy.ready():
            try:
                folder = str(copy.folder)
                return tokenizers.from_pretrained(folder, **kwargs), models.from_pretrained(
                    folder, dtype=self.dtype, **kwargs
                )
            except Exception as error:  # noqa: BLE001 - whole by its manifest, yet unloadable: rebuild it
                _log.warning(
                    "the converted copy in %s cannot be loaded (%s); converting the GGUF file again", copy.folder, error
                )
                copy.discard()
        kwargs["gguf_file"] = source.gguf_file
        tokenizer = source.load(tokenizers.from_pretrained, **kwargs)
        model = source.load(models.from_pretrained, dtype=self.dtype, **kwargs)
        copy.write(model, tokenizer)
        self.converted_from_gguf = True
        return tokenizer, model

    def _stop_ids(self) -> set[int]:
        ids = set()
        for value in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        return ids

    # -- prompts -----------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, Any]]) -> tuple[int, ...]:
        """Token ids of the chat prompt (the model's chat template, or a plain format without one)."""
        messages = text_messages(messages)
        if self.has_chat_template:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
            ids = encoded["input_ids"]
        else:
            ids = self.tokenizer(plain_prompt(messages))["input_ids"]
        return tuple(int(i) for i in ids)

    # -- grammars ----------------------------------------------------------------------------
    @property
    def grammars(self) -> GrammarCache:
        return self._grammars()

    # -- generation --------------------------------------------------------------------------
    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens): how long an answer is."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, generation: Generation) -> Generated:
        """Generate one answer, batched with whatever other requests arrive at the same time.
        A constrained schema is checked and compiled here, in the caller's thread, so one that
        cannot work raises `InvalidRequest` before it joins a batch."""
        if generation.constrained:
            constrained_plan(
                self._grammars,
                generation.json_schema or None,
                self.text_ids,
                generation.max_new_tokens,
                free_text=generation.free_text,
            )
        return self.batcher.submit(generation)

    def _decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def run_batch(self, batch: list[Generation]) -> list[Generated | BaseException]:
        torch = self.torch
        pad = self.tokenizer.pad_token_id
        width = max(len(g.prompt_ids) for g in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, g in enumerate(batch):
            input_ids[row, width - len(g.prompt_ids) :] = torch.tensor(g.prompt_ids, dtype=torch.long)
            attention[row, width - len(g.prompt_ids) :] = 1
        budgets = [g.max_new_tokens for g in batch]
        constraint = None
        if any(g.constrained for g in batch):
            plans = [
                self.grammars.plan(g.json_schema or None, free_text=g.free_text) if g.constrained else None
                for g in batch
            ]  # made by generate()
            constraint = JsonConstraint(self.grammars, plans, budgets, width)
        first = batch[0]
        options: dict[str, Any] = {"do_sample": first.temperature > 0}
        if first.temperature > 0:
            options.update(temperature=first.temperature, top_p=first.top_p or 1.0, top_k=first.top_k or 0)
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        if first.repetition_penalty:
            options["repetition_penalty"] = first.repetition_penalty
        from transformers import LogitsProcessorList, StoppingCriteriaList

        stopping = _RowBudget(budgets, width, self.stop_ids)
        streams = [
            StreamedText(g.on_text, () if g.constrained else g.stop, self._decode) if g.on_text else None for g in batch
        ]
        streaming = _RowStream(streams, budgets, width, self.stop_ids) if any(streams) else None
        with self._generate_lock, torch.inference_mode():
            if first.seed is not None and first.temperature > 0:
                torch.manual_seed(first.seed)
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                max_new_tokens=max(budgets),
                pad_token_id=pad,
                eos_token_id=sorted(self.stop_ids) or None,
                logits_processor=LogitsProcessorList([constraint] if constraint else []),
                stopping_criteria=StoppingCriteriaList([stopping] if streaming is None else [stopping, streaming]),
                **options,
            )
        results: list[Generated | BaseException] = []
        for row, g in enumerate(batch):
            if streaming is not None and row in streaming.errors:
                results.append(streaming.errors[row])  # its stream's caller stopped reading
                continue
            tokens = output[row, width:].tolist()[: g.max_new_tokens]
            ended = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
            if ended is not None:
                tokens = tokens[:ended]
            finish = "stop" if ended is not None else "length"
            if constraint is not None and g.constrained:
                closed = constraint.finish(row, tokens, self.stop_ids)
                finish = "stop" if finish == "stop" or len(closed) > len(tokens) else finish
                tokens = closed
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if g.stop and not g.constrained:
                text, stopped = cut_at_stop(text, g.stop)
                finish = "stop" if stopped else finish
            results.append(Generated(text, len(g.prompt_ids), len(tokens), finish))
        return results


class _RowBudget:
    """Stops each row at its own token budget or end-of-sequence (transformers' per-row criteria)."""

    def __init__(self, budgets: list[int], prompt_length: int, stop_ids: set[int]) -> None:
        self.budgets = budgets
        self.prompt_length = prompt_length
        self.stop_ids = stop_ids

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = input_ids.shape[1] - self.prompt_length
        done = [generated >= budget for budget in self.budgets]
        last = input_ids[:, -1].tolist()
        done = [d or (generated > 0 and token in self.stop_ids) for d, token in zip(done, last, strict=False)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _RowStream:
    """Hands each streamed row's newest token to its `StreamedText` after every step (a stopping
    criterion, so `generate` calls it then), until the row ends; stops a row whose callback
    raised, keeping the error for its caller."""

    def __init__(
        self, streams: list[StreamedText | None], budgets: list[int], prompt_length: int, stop_ids: set[int]
    ) -> None:
        self.streams = streams
        self.budgets = budgets
        self.prompt_length = prompt_length
        self.stop_ids = stop_ids
        self.ended = [stream is None for stream in streams]
        self.errors: dict[int, BaseException] = {}

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = input_ids.shape[1] - self.prompt_length
        last = input_ids[:, -1].tolist()
        for row, stream in enumerate(self.streams):
            if self.ended[row] or stream is None:
                continue
            if last[row] in self.stop_ids or generated > self.budgets[row]:
                self.ended[row] = True
                continue
            try:
                stream.add_token(int(last[row]))
            except Exception as error:  # noqa: BLE001 - the row's caller gets it; the other rows go on
                self.errors[row] = error
                self.ended[row] = True
        stopped = [row in self.errors for row in range(len(self.streams))]
        return torch.tensor(stopped, dtype=torch.bool, device=input_ids.device)
