"""Workload 6: a local model through LocalSLM's transformers engine vs raw `model.generate`, in its own process
(so peak memory is this model's). Prints one JSON list of rows on its last line.

    python benchmarks/local_model.py smollm2|qwen2-0.5b-arch [--quick]
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ["MYOPTO_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import Row, ratio_to

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "summary", "year"],
}


def model_path(name: str) -> str:
    if name == "smollm2":
        from myopto.backends.model_files import EMBEDDED_MODEL

        return EMBEDDED_MODEL
    from myopto.testing.tiny_model import tiny_model

    folder = Path(tempfile.gettempdir()) / "myopto-bench-qwen2-0.5b-arch"
    # Qwen2-0.5B's architecture with random weights: same shapes, same compute per token.
    return str(
        tiny_model(
            folder, hidden_size=896, layers=24, heads=14, kv_heads=2, intermediate_size=4864, model_vocab_size=151936
        )
    )


def continuous_batching(engine, label: str, prompts: list[list[int]], tokens: int, ours: Row) -> list[Row]:
    """transformers' own continuous batching (`generate_batch`, paged attention) on the same eight
    prompts, against our gathered batches. Run last: it switches the model's attention."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    # A cache sized for these eight requests: left to size itself on CPU it took most of the RAM.
    sizing = ContinuousBatchingConfig(num_blocks=4 * len(prompts), max_batch_tokens=512)
    config = GenerationConfig(
        max_new_tokens=tokens, do_sample=False, eos_token_id=-1, pad_token_id=engine.tokenizer.pad_token_id
    )
    before = engine.model.config._attn_implementation
    try:
        engine.model.set_attn_implementation("paged|sdpa")
        engine.model.generate_batch(prompts, generation_config=config, continuous_batching_config=sizing)  # untimed

        def once() -> float:
            begin = time.perf_counter()
            out = engine.model.generate_batch(prompts, generation_config=config, continuous_batching_config=sizing)
            return sum(len(o.generated_tokens) for o in out.values()) / (time.perf_counter() - begin)

        theirs = Row(label, "raw generate_batch (transformers' continuous batching), 8 requests", [once()], "tokens/s")
    except Exception as error:  # noqa: BLE001 - an older transformers without it: the row says why it was not run
        return [
            Row(
                label,
                "raw generate_batch (transformers' continuous batching)",
                [0.0],
                "tokens/s",
                note=f"not run: {error}",
            )
        ]
    finally:
        engine.model.set_attn_implementation(before)
    mine = Row(label, "get_llm, 8 concurrent (batched), again", ours.samples, "tokens/s")
    return [theirs, ratio_to(mine, theirs)]


def main() -> None:
    name = sys.argv[1]
    quick = "--quick" in sys.argv
    tokens = 16 if quick else 32
    repeats = 2 if quick else 3
    from myopto import get_llm, set_role_config
    from myopto.backends import local_slm

    path = model_path(name)
    set_role_config("bench", backend="LocalSLM", model=path, engine="transformers", max_batch_size=8)
    llm = get_llm("bench")
    start = time.perf_counter()
    engine = local_slm.engine_for(path, engine="transformers", max_batch_size=8, batch_wait=0.01)
    load = time.perf_counter() - start
    label = f"6 local, transformers: {name}" + ("" if engine.device == "cpu" else f" on {engine.device}")
    rows = [Row(label, "load time", [load], "s")]

    import torch

    prompt = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
    ids = torch.tensor([engine.prompt_ids(prompt)], device=engine.device)

    def raw_generate() -> float:
        begin = time.perf_counter()
        with torch.inference_mode():
            out = engine.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - begin)

    def through_llm() -> float:
        begin = time.perf_counter()
        response = llm(prompt, max_tokens=tokens)
        return response.usage.completion_tokens / (time.perf_counter() - begin)

    raw_generate(), through_llm()  # untimed warm-up of both paths
    raw = Row(label, "raw model.generate, 1 request", [raw_generate() for _ in range(repeats)], "tokens/s")
    ours = Row(label, "get_llm, 1 request", [through_llm() for _ in range(repeats)], "tokens/s", goal="≥ 0.95× raw")  # noqa: RUF001 - the multiplication sign, as the results table prints it
    ratio_to(ours, raw)
    rows += [raw, ours]

    prompts = [[{"role": "user", "content": f"Write a long story about topic number {i}."}] for i in range(8)]

    def sequential() -> float:
        begin = time.perf_counter()
        produced = sum(llm(p, max_tokens=tokens).usage.completion_tokens for p in prompts)
        return produced / (time.perf_counter() - begin)

    def concurrent_8() -> float:
        begin = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            produced = sum(r.usage.completion_tokens for r in pool.map(lambda p: llm(p, max_tokens=tokens), prompts))
        return produced / (time.perf_counter() - begin)

    concurrent_8()  # untimed: the first batch of eight pays one-off costs (CUDA kernels for its shapes)
    seq = Row(label, "get_llm, 8 requests one by one", [sequential() for _ in range(max(1, repeats - 1))], "tokens/s")
    conc = Row(
        label,
        "get_llm, 8 concurrent (batched)",
        [concurrent_8() for _ in range(max(1, repeats - 1))],
        "tokens/s",
        goal="≥ 4× one by one",  # noqa: RUF001 - the multiplication sign, as the results table prints it
    )
    ratio_to(conc, seq)

    def raw_padded_batch() -> float:
        """The eight prompts left-padded into one raw `generate`: what gathering can reach at best."""
        encoded = [engine.prompt_ids(p) for p in prompts]
        width, pad = max(map(len, encoded)), engine.tokenizer.pad_token_id
        batch = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for row, one in enumerate(encoded):
            batch[row, width - len(one) :] = torch.tensor(one)
            mask[row, width - len(one) :] = 1
        begin = time.perf_counter()
        with torch.inference_mode():
            out = engine.model.generate(
                input_ids=batch.to(engine.device),
                attention_mask=mask.to(engine.device),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return (out.shape[1] - width) * len(encoded) / (time.perf_counter() - begin)

    raw_padded_batch()  # untimed, as for ours
    padded = Row(
        label,
        "raw model.generate, the 8 in one padded batch",
        [raw_padded_batch() for _ in range(max(1, repeats - 1))],
        "tokens/s",
    )
    ratio_to(padded, seq)
    rows += [seq, conc, padded]

    def constrained(on: bool) -> float:
        begin = time.perf_counter()
        try:
            response = llm(
                [{"role": "user", "content": "Describe a famous book as JSON."}],
                response_format=SCHEMA,
                max_tokens=tokens * 2,
                constrained=on,
            )
            produced = response.usage.completion_tokens
        except Exception as error:  # noqa: BLE001 - unconstrained answers may not be JSON: count what was generated
            produced = getattr(getattr(error, "response", None), "usage", None)
            produced = produced.completion_tokens if produced else 0
        return produced / (time.perf_counter() - begin)

    set_role_config("bench", reasks=0)
    constrained(True), constrained(False)  # untimed: the first constrained call compiles the grammar
    free = Row(label, "JSON request, unconstrained", [constrained(False) for _ in range(repeats)], "tokens/s")
    tied = Row(label, "JSON request, constrained (xgrammar)", [constrained(True) for _ in range(repeats)], "tokens/s")
    ratio_to(tied, free)
    rows += [free, tied]
    rows += continuous_batching(engine, label, [list(engine.prompt_ids(p)) for p in prompts], tokens, conc)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(Row(label, "peak memory (RSS)", [peak], "MiB"))
    print(json.dumps([row.__dict__ for row in rows]))


if __name__ == "__main__":
    main()
