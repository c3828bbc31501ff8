"""Workload 5: 200 calls to a server that takes 50 ms each, 16 at a time, through threads and
asyncio, against the ideal time and the raw `AsyncOpenAI` client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from stats import Row, ratio_to, rounds


def concurrency(repeats: int) -> list[Row]:
    from myopto import get_llm, set_role_config
    from myopto.testing import FakeOpenAIServer

    calls, latency, width = 200, 0.05, 16
    ideal = calls * latency / width
    with FakeOpenAIServer(latency=latency) as server:
        set_role_config("bench-conc", backend="CustomLLM", model="m", base_url=server.url, api_key="k", cache="off")
        llm = get_llm("bench-conc")

        def threads() -> float:
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(width) as pool:
                list(pool.map(lambda i: llm(f"c{i}"), range(calls)))
            return time.perf_counter() - start

        async def gathered() -> None:
            gate = asyncio.Semaphore(width)

            async def one(i: int) -> None:
                async with gate:
                    await llm.acall(f"a{i}")

            await asyncio.gather(*(one(i) for i in range(calls)))

        def tasks() -> float:
            start = time.perf_counter()
            asyncio.run(gathered())
            return time.perf_counter() - start

        async def raw_gathered() -> None:
            import openai

            client = openai.AsyncOpenAI(base_url=server.url, api_key="k", max_retries=0)
            gate = asyncio.Semaphore(width)

            async def one(i: int) -> None:
                async with gate:
                    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"r{i}"}])

            await asyncio.gather(*(one(i) for i in range(calls)))
            await client.close()

        def raw_tasks() -> float:
            start = time.perf_counter()
            asyncio.run(raw_gathered())
            return time.perf_counter() - start

        threads()
        raw_tasks()
        ideal_row = Row("5 concurrency", f"ideal {calls}×{latency * 1000:.0f} ms / {width}", [ideal], "s")  # noqa: RUF001 - the multiplication sign, as the results table prints it
        ours_async, raw_async = [], []
        for _ in range(repeats):  # interleaved
            raw_async.append(raw_tasks())
            ours_async.append(tasks())
        raw_row = ratio_to(Row("5 concurrency", "raw AsyncOpenAI, 16-way", raw_async, "s"), ideal_row)
        rows = [
            ideal_row,
            ratio_to(Row("5 concurrency", "threads, 16-way", rounds(threads, repeats), "s", goal="≤ 1.15"), ideal_row),
            raw_row,
            ratio_to(
                Row("5 concurrency", "asyncio, 16-way (myopto CustomLLM role)", ours_async, "s", goal="≤ 1.05"), raw_row
            ),
        ]
    return rows
