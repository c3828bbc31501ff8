"""Streaming: an answer's text as it is decoded, then the same stream replayed from the cache.

Runs on the embedded SmolLM2-135M-Instruct (llama.cpp when installed), with a cache folder of
its own, so the second run of the same question streams the stored chunks with no model call.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from myopto import get_llm, set_role_config
from myopto.backends.model_files import EMBEDDED_MODEL

QUESTION = [{"role": "user", "content": "Write two sentences about the sea."}]


def stream_once(label: str) -> list[str]:
    llm = get_llm("writer")
    start = time.perf_counter()
    pieces: list[str] = []
    first = None
    with llm.stream(QUESTION, max_tokens=48) as stream:
        for chunk in stream:
            if chunk.text:
                first = first if first is not None else time.perf_counter() - start
                pieces.append(chunk.text)
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
        response = stream.response
    print(
        f"\n{label}: {len(pieces)} text chunks, first after {first or 0:.3f} s, whole answer after "
        f"{time.perf_counter() - start:.3f} s, cached={response.cached}, "
        f"{response.usage.completion_tokens} tokens\n"
    )
    return pieces


async def stream_async() -> str:
    parts = [chunk.text async for chunk in get_llm("writer").astream(QUESTION, max_tokens=48)]
    return "".join(parts)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        set_role_config("writer", backend="LocalSLM", model=EMBEDDED_MODEL, cache="on", cache_dir=folder)
        live = stream_once("live")
        replayed = stream_once("rerun")
        print("the rerun streamed the same chunks:", replayed == live)
        print("async, from the cache too:", asyncio.run(stream_async()) == "".join(live))


if __name__ == "__main__":
    main()
