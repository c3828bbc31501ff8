"""Workload 9: streamed calls over HTTP. A CustomLLM role's stream (`llm.stream(...)`) against the
raw `openai` SDK's stream of the same server answer, and a LiteLLM role's against raw
`litellm.completion(stream=True)`, on the loopback test server with no delay: time to the first
chunk, time to the end, and what each chunk costs (the slope over two answer lengths, so the
per-call part cancels out). The server runs in a process of its own, as a provider would: in this
one it would take the GIL from the client's threads. Prints one JSON list of rows on its last line.

    python benchmarks/streaming.py [--quick]
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ["MYOPTO_CACHE"] = "off"
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import MESSAGES, Row, ratio_to

LABEL = "9 streaming: HTTP, 0 ms server"
SHORT, LONG = 8, 128  # words in the answer: one content chunk each, plus role, finish and usage chunks
SERVER = f"""
import sys
from myopto.testing import FakeOpenAIServer
words = {{"short": {SHORT}, "long": {LONG}}}
def answer(body):
    return " ".join(f"word{{i}}" for i in range(words[body["messages"][-1]["content"]]))
server = FakeOpenAIServer(responder=answer).start()
print(server.url, flush=True)
sys.stdin.read()  # until the benchmark closes it
"""


def timed(open_stream: Callable[[], Iterable[Any]]) -> tuple[float, float, int]:
    """Seconds to the first chunk and to the end of one stream, and its number of chunks."""
    start = time.perf_counter()
    first = None
    count = 0
    for _ in open_stream():
        if first is None:
            first = time.perf_counter()
        count += 1
    end = time.perf_counter()
    return (first or end) - start, end - start, count


def medians(open_stream: Callable[[], Iterable[Any]], calls: int) -> tuple[float, float, int]:
    """Median time to the first chunk and to the end, in ms, over `calls` streams, and the chunks of one."""
    results = [timed(open_stream) for _ in range(calls)]
    return (
        statistics.median(r[0] for r in results) * 1e3,
        statistics.median(r[1] for r in results) * 1e3,
        results[0][2],
    )


def main() -> None:
    quick = "--quick" in sys.argv
    repeats, calls = (3, 20) if quick else (5, 60)
    import litellm
    import openai

    from myopto import get_llm, set_role_config

    words = ("short", "long")
    rows: list[Row] = []
    with subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as server:
        assert server.stdout is not None and server.stdin is not None
        url = server.stdout.readline().strip()
        client = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)
        usage = {"include_usage": True}
        set_role_config("bench-custom", backend="CustomLLM", model="m", base_url=url, api_key="sk-bench")
        set_role_config("bench-litellm", backend="LiteLLM", model="openai/m", base_url=url, api_key="sk-bench")
        custom, lite = get_llm("bench-custom"), get_llm("bench-litellm")

        def message(size: str) -> list[dict[str, Any]]:
            return [{**MESSAGES[0], "content": size}]

        sides: dict[str, Callable[[str], Iterable[Any]]] = {
            "raw openai SDK stream": lambda size: client.chat.completions.create(
                model="m", messages=message(size), stream=True, stream_options=usage
            ),
            "myopto CustomLLM role, llm.stream(...)": lambda size: custom.stream(message(size)),
            "raw litellm.completion(stream=True)": lambda size: litellm.completion(
                model="openai/m",
                messages=message(size),
                api_base=url,
                api_key="sk-bench",
                max_retries=0,
                stream=True,
                stream_options=usage,
            ),
            "myopto LiteLLM role, llm.stream(...)": lambda size: lite.stream(message(size)),
        }
        for side in sides.values():  # warm-up: clients built, connections open
            for size in words:
                medians(lambda side=side, size=size: side(size), 5)
        first: dict[str, list[float]] = {name: [] for name in sides}
        total: dict[str, list[float]] = {name: [] for name in sides}
        per_chunk: dict[str, list[float]] = {name: [] for name in sides}
        chunks = 0
        for _ in range(repeats):  # interleaved, so drift hits every side alike
            for name, side in sides.items():
                short = medians(lambda side=side: side("short"), calls)
                long = medians(lambda side=side: side("long"), calls)
                first[name].append(long[0])
                total[name].append(long[1])
                per_chunk[name].append((long[1] - short[1]) / (long[2] - short[2]) * 1e3)
                chunks = long[2]
        names = list(sides)
        for raw, ours in (names[0:2], names[2:4]):
            anchor_first = Row(LABEL, f"{raw}: first chunk", first[raw], "ms")
            anchor_total = Row(LABEL, f"{raw}: whole stream ({chunks} chunks)", total[raw], "ms")
            anchor_chunk = Row(LABEL, f"{raw}: per chunk", per_chunk[raw], "µs/chunk")
            ours_first = ratio_to(Row(LABEL, f"{ours}: first chunk", first[ours], "ms", goal="≤ 1.05"), anchor_first)
            ours_total = ratio_to(
                Row(LABEL, f"{ours}: whole stream ({chunks} chunks)", total[ours], "ms", goal="≤ 1.05"), anchor_total
            )
            ours_chunk = ratio_to(Row(LABEL, f"{ours}: per chunk", per_chunk[ours], "µs/chunk"), anchor_chunk)
            added = [a - b for a, b in zip(per_chunk[ours], per_chunk[raw], strict=True)]
            ours_chunk.note = f"{sorted(added)[len(added) // 2]:+.1f} µs a chunk against the raw stream"
            rows += [anchor_first, ours_first, anchor_total, ours_total, anchor_chunk, ours_chunk]
        server.stdin.close()
    print(json.dumps([dataclasses.asdict(row) for row in rows]))


if __name__ == "__main__":
    main()
