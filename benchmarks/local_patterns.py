"""The local patterns users run, each against its anchor at the anchor's own defaults (issue 23):

- one stream: a LocalSLM role with no options against `llama-server -m FILE` as it starts
  (its own slots, context, threads and prompt cache), the same GGUF file and prompts, greedy;
- a burst of short requests: 8 threads, one short request each, against `llama-server -m FILE
  --parallel 8` answering 8 concurrent requests;
- transformers: the gain of 8 concurrent requests over the same 8 one by one, against the gain
  of one `generate` of the 8 padded by hand.

Both sides' answers are counted alike: llama-server's end-of-turn token is not (`LlamaServer.chat`).
Ours and the anchor alternate within each round (the first to go swaps every round), so drift in
the machine's speed hits both; every figure is a median over the rounds with its spread, and each
row's note gives the ratio of every round and the load average before and after. Runs in its
own process, one part at a time; prints one JSON list of rows on its last line (an empty list,
and why on stderr, when llama-server is not installed).

    python benchmarks/local_patterns.py llama|transformers [--quick]
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ["MYOPTO_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_engine import LlamaServer, server_binary
from stats import Row, ratio_to

STREAM_TOKENS = 64
BURST_TOKENS = 48
BURST = 8
TOPICS = ["a lighthouse keeper", "a dragon", "a ship", "a king", "a robot", "a tree", "a bird", "a river", "a clock"]


def story(round_: int) -> list[dict[str, str]]:
    """A new prompt every round (the same on both sides): no prompt is asked twice."""
    topic = TOPICS[round_ % len(TOPICS)]
    return [{"role": "user", "content": f"Write a long story about {topic}, number {round_}."}]


def sentence(round_: int, index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write one sentence about the number {round_ * BURST + index}."}]


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def alternate(
    rounds: int, ours: Callable[[int], float], theirs: Callable[[int], float]
) -> tuple[list[float], list[float]]:
    """Each round runs both, ours first in even rounds and the anchor first in odd ones."""
    mine: list[float] = []
    anchor: list[float] = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            mine.append(ours(round_))
            anchor.append(theirs(round_))
        else:
            anchor.append(theirs(round_))
            mine.append(ours(round_))
        progress = f"  round {round_}: ours {mine[-1]:.1f}, anchor {anchor[-1]:.1f}, load {load()}"
        print(progress, file=sys.stderr, flush=True)
    return mine, anchor


def paired(mine: list[float], anchor: list[float], before: str) -> str:
    ratios = [m / a for m, a in zip(mine, anchor, strict=True)]
    return (
        f"ratio per round {' '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}); "
        f"load average (1/5/15 min) {before} before, {load()} after"
    )


def llama_patterns(quick: bool) -> list[Row]:
    rounds = 5 if quick else 9
    from myopto import get_llm, set_role_config
    from myopto.backends.model_files import EMBEDDED_MODEL, locate

    set_role_config("patterns", backend="LocalSLM", model=EMBEDDED_MODEL)  # no options: its defaults
    llm = get_llm("patterns")
    source = locate(EMBEDDED_MODEL, prefer_gguf=True)
    gguf = Path(source.path) / str(source.gguf_file)

    def ours_tokens(messages: list[dict[str, str]], tokens: int) -> int:
        return int(llm(messages, max_tokens=tokens).usage.completion_tokens)

    rows: list[Row] = []
    label = "6 local patterns, llama.cpp: smollm2"
    with LlamaServer(gguf, defaults=True, parallel=None) as server:

        def one_stream(call: Callable[[list[dict[str, str]], int], int]) -> Callable[[int], float]:
            def run(round_: int) -> float:
                begin = time.perf_counter()
                produced = call(story(round_), STREAM_TOKENS)
                return produced / (time.perf_counter() - begin)

            return run

        theirs_call = lambda messages, tokens: server.chat(messages, tokens, cache_prompt=None)  # noqa: E731
        one_stream(ours_tokens)(99), one_stream(theirs_call)(99)  # warm both
        before = load()
        mine, anchor = alternate(rounds, one_stream(ours_tokens), one_stream(theirs_call))
        server_row = Row(label, "llama-server at its defaults, one stream", anchor, "tokens/s", note=server.settings())
        ours_row = Row(
            label,
            "LocalSLM role with no options, one stream",
            mine,
            "tokens/s",
            goal="≥ 1.0× llama-server",  # noqa: RUF001 - the multiplication sign, as the results table prints it
            note=paired(mine, anchor, before),
        )
        rows += [server_row, ratio_to(ours_row, server_row)]

    with LlamaServer(gguf, defaults=True, parallel=BURST) as server:

        def burst(call: Callable[[list[dict[str, str]], int], int]) -> Callable[[int], float]:
            def run(round_: int) -> float:
                begin = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
                    produced = sum(pool.map(lambda i: call(sentence(round_, i), BURST_TOKENS), range(BURST)))
                return produced / (time.perf_counter() - begin)

            return run

        theirs_call = lambda messages, tokens: server.chat(messages, tokens, cache_prompt=None)  # noqa: E731
        burst(ours_tokens)(99), burst(theirs_call)(99)  # warm both
        before = load()
        # a burst lasts seconds and its figure swings with how its 8 answers happen to end
        # together (the steps left with few sequences): three times the rounds of a stream
        mine, anchor = alternate(3 * rounds, burst(ours_tokens), burst(theirs_call))
        server_row = Row(
            label,
            f"llama-server --parallel {BURST}, {BURST} concurrent short requests",
            anchor,
            "tokens/s",
            note=server.settings(),
        )
        ours_row = Row(
            label,
            f"LocalSLM role with no options, {BURST} threads, one short request each",
            mine,
            "tokens/s",
            goal="≥ 1.0× llama-server",  # noqa: RUF001 - the multiplication sign, as the results table prints it
            note=paired(mine, anchor, before),
        )
        rows += [server_row, ratio_to(ours_row, server_row)]
    return rows


def transformers_patterns(quick: bool) -> list[Row]:
    rounds = 3 if quick else 5
    import torch

    from myopto import get_llm, set_role_config
    from myopto.backends import local_slm
    from myopto.backends.model_files import EMBEDDED_MODEL

    set_role_config("patterns", backend="LocalSLM", model=EMBEDDED_MODEL, engine="transformers")
    llm = get_llm("patterns")
    llm("Hi", max_tokens=2)  # loads the model (and keeps its converted copy), untimed
    engine = local_slm.engine_for(EMBEDDED_MODEL, engine="transformers")
    prompts = [sentence(0, i) for i in range(BURST)]
    stop_ids = sorted(engine.stop_ids)

    def one_by_one() -> float:
        begin = time.perf_counter()
        produced = sum(llm(p, max_tokens=BURST_TOKENS).usage.completion_tokens for p in prompts)
        return produced / (time.perf_counter() - begin)

    def concurrent_8() -> float:
        begin = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(lambda p: llm(p, max_tokens=BURST_TOKENS), prompts))
        return sum(a.usage.completion_tokens for a in answers) / (time.perf_counter() - begin)

    def hand_padded() -> float:
        """The 8 prompts left-padded by hand into one raw `generate`, timed from the prompts' ids;
        each row's tokens counted up to its end of turn, as an answer's are."""
        encoded = [engine.prompt_ids(p) for p in prompts]
        width, pad = max(map(len, encoded)), engine.tokenizer.pad_token_id
        begin = time.perf_counter()
        batch = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for row, ids in enumerate(encoded):
            batch[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        with torch.inference_mode():
            out = engine.model.generate(
                input_ids=batch,
                attention_mask=mask,
                max_new_tokens=BURST_TOKENS,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=stop_ids,
            )
        produced = 0
        for row in out[:, width:].tolist():
            produced += next((i for i, token in enumerate(row) if token in stop_ids), len(row))
        return produced / (time.perf_counter() - begin)

    concurrent_8(), hand_padded()  # untimed: each path's first batch pays one-off costs
    before = load()
    sequential, ours, padded = [], [], []
    for round_ in range(rounds):
        sequential.append(one_by_one())
        if round_ % 2 == 0:
            ours.append(concurrent_8())
            padded.append(hand_padded())
        else:
            padded.append(hand_padded())
            ours.append(concurrent_8())
    label = "6 local patterns, transformers: smollm2"
    seq_row = Row(label, f"get_llm, {BURST} short requests one by one", sequential, "tokens/s")
    padded_row = ratio_to(
        Row(label, f"raw generate, the {BURST} padded by hand into one batch", padded, "tokens/s"), seq_row
    )
    ours_row = ratio_to(Row(label, f"get_llm, {BURST} threads, one short request each", ours, "tokens/s"), seq_row)
    gains = lambda figures: [f / s for f, s in zip(figures, sequential, strict=True)]  # noqa: E731
    padded_gain = Row(label, "gain of the hand-padded batch over one by one", gains(padded), "x one by one")
    ours_gain = Row(
        label,
        f"gain of {BURST} concurrent requests over one by one",
        gains(ours),
        "x one by one",
        goal="≥ 0.95× the hand-padded gain",  # noqa: RUF001 - the multiplication sign, as the results table prints it
        note=paired(ours, padded, before),
    )
    return [seq_row, padded_row, ours_row, padded_gain, ratio_to(ours_gain, padded_gain)]


def main() -> None:
    part = sys.argv[1] if len(sys.argv) > 1 else ""
    quick = "--quick" in sys.argv
    if part == "llama":
        try:
            binary = server_binary()
        except SystemExit as missing:
            print(f"local_patterns: skipped ({missing})", file=sys.stderr)
            print("[]")
            return
        if not Path(binary).exists():
            print(f"local_patterns: skipped (no llama-server at {binary})", file=sys.stderr)
            print("[]")
            return
        rows = llama_patterns(quick)
    elif part == "transformers":
        rows = transformers_patterns(quick)
    else:
        raise SystemExit("usage: local_patterns.py llama|transformers [--quick]")
    for row in rows:
        print(f"{row.name}: median {statistics.median(row.samples):.2f} {row.unit} {row.note}", file=sys.stderr)
    print(json.dumps([row.__dict__ for row in rows]))


if __name__ == "__main__":
    main()
