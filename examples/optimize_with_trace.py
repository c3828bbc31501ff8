"""A short OptoPrime loop on a small local model, its answers enforced as a JSON schema.

The optimizer role runs on the embedded SmolLM2-135M-Instruct (LocalSLM, `constrained=True`),
or on OpenAI when `OPENAI_API_KEY` is set. Every call is cached: run it twice and the second
run replays; `MYOPTO_CACHE=replay python examples/optimize_with_trace.py` proves it offline.

    python examples/optimize_with_trace.py [cache-dir]
"""

from __future__ import annotations

import os
import sys
import tempfile

from opto import trace

import myopto
from myopto.backends.model_files import EMBEDDED_MODEL
from myopto.integrations.trace import OptoPrime
from myopto.utils import get_llm, get_usage_summary, set_role_config

FEEDBACK = "The output should be 10 and the greeting should be 'hello world'."


def configure(cache_dir: str) -> str:
    if os.environ.get("OPENAI_API_KEY"):
        set_role_config("optimizer", backend="LiteLLM", model="gpt-4o-mini", cache_dir=cache_dir)
        return "gpt-4o-mini through LiteLLM"
    set_role_config("optimizer", backend="LocalSLM", model=EMBEDDED_MODEL, constrained=True, cache_dir=cache_dir)
    return f"{EMBEDDED_MODEL} (LocalSLM, constrained decoding)"


def main(cache_dir: str) -> None:
    print(f"optimizer: {configure(cache_dir)}")
    x = trace.node(1, trainable=True, name="x")
    greeting = trace.node("hi", trainable=True, name="greeting")

    @trace.bundle()
    def program(number, text):
        """Doubles the number and repeats the text."""
        return number * 2, text

    optimizer = OptoPrime([x, greeting], llm=get_llm("optimizer"), max_tokens=160)
    with myopto.run("optimize-with-trace"):
        for step in range(1, 4):
            optimizer.zero_feedback()
            optimizer.backward(program(x, greeting), FEEDBACK)
            before = get_usage_summary()["total_cost"]
            optimizer.step()
            response = optimizer.log[-1]["response"]
            cost = get_usage_summary()["total_cost"] - before
            print(
                f"step {step}: suggestion {myopto.try_parse_json(response)['suggestion']} -> x={x.data!r}, "
                f"greeting={greeting.data!r} (cost ${cost:.4f})"
            )
    total = get_usage_summary()["total"]
    print(f"calls: {total['calls']}, served from the cache: {total['cache_hits']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.gettempdir(), "myopto-trace-example"))
