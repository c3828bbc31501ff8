"""Workload 4: a cache hit through `get_llm(role)(...)` against DSPy's, in memory and from disk.

The disk figures come from a new process reading what another one wrote (`HIT_SCRIPT`, also used
by the Redis workload), so each counts what a restarted run pays per hit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from stats import MESSAGES, Row, per_call_us, ratio_to

HIT_SCRIPT = """
import json, os, sys, time
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import warnings; warnings.filterwarnings("ignore")
kind, url, directory, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prompts = [[{"role": "user", "content": f"hit {i}"}] for i in range(n)]
if kind == "myopto":
    from myopto import get_llm, set_role_config
    set_role_config("b", backend="CustomLLM", model="m", base_url=url, api_key="k", cache="on", cache_dir=directory)
    call = lambda m: get_llm("b")(m)
elif kind == "myopto-redis":  # `directory` is a Redis URL here
    from myopto import get_llm, set_role_config
    set_role_config("b", backend="CustomLLM", model="m", base_url=url, api_key="k", cache="on", cache_url=directory)
    call = lambda m: get_llm("b")(m)
elif kind == "dspy":
    import dspy
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=False, disk_cache_dir=directory)
    lm = dspy.LM("openai/m", api_base=url, api_key="k", cache=True, num_retries=0)
    call = lambda m: lm(messages=m)
if sys.argv[5] == "fill":
    for m in prompts: call(m)
else:
    call(prompts[0])  # the process's one-off setup (imports, connections, chain), not a hit's cost
    start = time.perf_counter()
    for m in prompts[1:]: call(m)
    print(json.dumps((time.perf_counter() - start) / (n - 1) * 1e6))
"""


def cache_hits(repeats: int, calls: int) -> list[Row]:
    import dspy

    from myopto import get_llm, set_role_config
    from myopto.testing import FakeOpenAIServer

    rows: dict[str, Row] = {}
    with FakeOpenAIServer() as server:
        directory = tempfile.mkdtemp(prefix="myopto-hit-")
        set_role_config(
            "bench-hit",
            backend="CustomLLM",
            model="m",
            base_url=server.url,
            api_key="k",
            cache="on",
            cache_dir=directory,
        )
        get_llm("bench-hit")(messages=MESSAGES)
        lm = dspy.LM("openai/m", api_base=server.url, api_key="k", cache=True, num_retries=0)
        lm(messages=MESSAGES)
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved; ours through get_llm(role)(...), request building included
            ours.append(per_call_us(lambda: get_llm("bench-hit")(messages=MESSAGES), calls))
            theirs.append(per_call_us(lambda: lm(messages=MESSAGES), calls))
        rows["myopto memory"] = Row(
            "4 cache hit",
            "myopto, memory (LRU), get_llm(role)(messages=...)",
            ours,
            "µs/call",
            goal="≤ 0.2 (5× faster)",  # noqa: RUF001 - the multiplication sign, as the results table prints it
        )
        rows["dspy memory"] = Row("4 cache hit", "DSPy, memory, lm(messages=...)", theirs, "µs/call")
        script = Path(tempfile.mkdtemp()) / "hits.py"
        script.write_text(HIT_SCRIPT)
        for kind, label in (("myopto", "myopto, disk (new process)"), ("dspy", "DSPy, disk (new process)")):
            folder = tempfile.mkdtemp(prefix=f"hit-{kind}-")
            subprocess.run(
                [sys.executable, str(script), kind, server.url, folder, "200", "fill"], check=True, capture_output=True
            )
            samples = []
            for _ in range(repeats):
                out = subprocess.run(
                    [sys.executable, str(script), kind, server.url, folder, "200", "read"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                samples.append(json.loads(out.strip().splitlines()[-1]))
            rows[label] = Row("4 cache hit", label, samples, "µs/call")
    ratio_to(rows["myopto memory"], rows["dspy memory"])
    ratio_to(rows["myopto, disk (new process)"], rows["DSPy, disk (new process)"])
    return list(rows.values())
