"""A tagged run, then what it cost and what it did: the usage summary and the call log read back.

Runs against myopto's test server (with a couple of injected faults) so it works anywhere.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import myopto
from myopto.cli import main as myopto_cli
from myopto.testing import FakeOpenAIServer
from myopto.utils import get_llm, llm_json, print_usage_summary, set_role_config


def main(folder: Path) -> None:
    log = folder / "calls.jsonl"
    myopto.configure_logging(log, messages=True)
    with FakeOpenAIServer() as server:
        set_role_config(
            "executor",
            backend="CustomLLM",
            model="gpt-4o-mini",
            base_url=server.url,
            cache="on",
            cache_dir=str(folder / "cache"),
            retry_backoff=0.01,
        )
        set_role_config(
            "optimizer",
            backend="CustomLLM",
            model="my-finetune",
            base_url=server.url,
            pricing={"input": 3.0, "output": 15.0},
            retries=0,
        )
        with myopto.run("exp-42", variant="baseline"):
            for question in ("What is 2+2?", "Name a prime.", "What is 2+2?"):  # the repeat is a cache hit
                get_llm("executor")(question)
            server.fail(429, retry_after=0.05)  # retried, then fine
            get_llm("executor")("One more question.")
            llm_json(
                "Suggest a new value for x.",
                {"type": "object", "properties": {"x": {"type": "integer"}}},
                role="optimizer",
            )
            server.fail(400)
            try:
                get_llm("optimizer")("A request the server rejects.")
            except myopto.BadRequest as error:
                print(f"caught: {type(error).__name__} after {error.attempts} attempt(s)\n")
    myopto.configure_logging()

    print("== print_usage_summary(run='exp-42')")
    print_usage_summary(run="exp-42")
    print(f"\n== myopto logs summary {log.name}")
    myopto_cli(["logs", "summary", str(log)])
    print(f"\n== myopto logs show {log.name} --errors")
    myopto_cli(["logs", "show", str(log), "--errors"])
    print(f"\n== myopto logs show {log.name} --role optimizer --last 1")
    myopto_cli(["logs", "show", str(log), "--role", "optimizer", "--last", "1", "--grep", "suggest"])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="myopto-run-")))
