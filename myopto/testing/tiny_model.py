"""`tiny_model(path)`: build a tiny random-weight chat model offline, for tests and benchmarks.

A byte-level BPE tokenizer is trained with `tokenizers` on a small built-in corpus, given a
ChatML chat template, and saved with a Qwen2 model (hidden size 64, 2 layers by default) through
`save_pretrained`, so the real loading code (`AutoTokenizer`, `AutoModelForCausalLM`,
`mlx_lm.load`) reads it like any model folder. Needs the `local` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    'The capital of France is Paris. {"name": "John", "age": 30} [1, 2, 3] true false null',
    "Answer with one valid JSON object and nothing else: no prose, no code fences.",
    "system user assistant You are a helpful assistant. What is the answer? Hello world!",
    '{"reasoning": "because", "suggestion": {"x": 1.5}, "city": "Rome", "items": ["a", "b"]}',
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"-_()[]{}<>/\\|@#$%^&*+=~`",
]


def tiny_model(
    path: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 600,
    seed: int = 0,
    chat_template: bool = True,
    model_vocab_size: int | None = None,
) -> Path:
    """Build (or reuse, when already built) a tiny Qwen2 chat model folder at `path`.

    The defaults make a ~0.4 MB model; Qwen2-0.5B's architecture for speed benchmarks is
    `hidden_size=896, layers=24, heads=14, kv_heads=2, intermediate_size=4864,
    model_vocab_size=151936` (random weights; embedding rows past the tokenizer are unused).
    """
    path = Path(path)
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(vocab_size, chat_template)
    tokenizer.save_pretrained(path)
    model = _model(tokenizer, hidden_size, layers, heads, kv_heads, intermediate_size, seed, model_vocab_size)
    model.save_pretrained(path)
    return path


def _tokenizer(vocab_size: int, chat_template: bool) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    if chat_template:
        tokenizer.chat_template = CHATML
    return tokenizer


def _model(
    tokenizer: Any, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, seed: int, vocab: int | None
) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=max(vocab or 0, len(tokenizer)),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
