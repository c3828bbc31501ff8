"""One worker of the multi-process test: compiles the small DSPy program that
tests/integrations_dspy/test_dspy_cache.py compiles, with BootstrapFewShot, on the executor role
pointed at the test server (URL) with its cache on Redis (REDIS_URL), then evaluates it. Prints
one JSON line: the demos it chose, its score, and its calls and cache hits."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations_dspy"))

import dspy
from dspy_kit import compile_and_evaluate

from myopto import get_usage_summary, set_role_config
from myopto.integrations.dspy import lm

set_role_config(
    "executor",
    backend="CustomLLM",
    model="gpt-4o-mini",
    base_url=os.environ["URL"],
    api_key="sk-x",
    retries=0,
    cache="on",
    cache_url=os.environ["REDIS_URL"],
)
with dspy.context(lm=lm("executor")):
    demos, score = compile_and_evaluate()
tally = get_usage_summary()["by_role"]["executor"]
print(json.dumps({"demos": demos, "score": score, "calls": tally["calls"], "cache_hits": tally["cache_hits"]}))
