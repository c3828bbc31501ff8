"""A DSPy program compiled with a DSPy optimiser on a myopto role: cached, rerun for free, replayed
offline.

`dspy.configure(lm=myopto.integrations.dspy.lm("executor"))` is the one line: every call of the
program runs down the executor role's chain, so myopto's cache records the compilation and its
evaluation, the usage ledger counts them by run, and a replay needs no server. The model here is
myopto's test server answering as a model that adds numbers (so the example runs anywhere);
point the role at any backend (`set_role_config("executor", backend="LiteLLM",
model="openai/gpt-4o-mini")`, a LocalSLM model, ...) and the program runs the same.

    python examples/dspy_program.py [CACHE_DIR]
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import dspy

from myopto import get_usage_summary, set_role_config
from myopto.integrations.dspy import lm, run
from myopto.testing import FakeOpenAIServer

TRAIN = [
    dspy.Example(question=f"What is {a} plus {a + 1}?", answer=str(2 * a + 1)).with_inputs("question")
    for a in range(1, 5)
]
DEV = [
    dspy.Example(question=f"What is {a} plus {a * 2}?", answer=str(3 * a)).with_inputs("question")
    for a in range(10, 14)
]


def adder(body: dict[str, Any]) -> str:
    """The test server's model: answers DSPy's ChatAdapter prompt with the sum of the question's numbers."""
    question = re.findall(r"\[\[ ## question ## \]\]\n(.*)", body["messages"][-1]["content"])[-1]
    total = sum(int(n) for n in re.findall(r"\d+", question))
    return f"[[ ## reasoning ## ]]\nI add the numbers.\n\n[[ ## answer ## ]]\n{total}\n\n[[ ## completed ## ]]"


def exact(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


def compile_and_evaluate(name: str) -> tuple[list[str], float]:
    """Compile a ChainOfThought with BootstrapFewShot, then evaluate it, inside myopto run `name`."""
    with run(name):  # myopto.run that also reaches the threads dspy.Evaluate starts
        optimizer = dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=2)
        compiled = optimizer.compile(dspy.ChainOfThought("question -> answer"), trainset=TRAIN)
        score = dspy.Evaluate(devset=DEV, metric=exact, num_threads=2, display_progress=False)(compiled).score
    (predictor,) = compiled.predictors()
    return [demo.question for demo in predictor.demos], float(score)


def main(directory: Path) -> None:
    server = FakeOpenAIServer(adder).start()
    set_role_config(
        "executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, api_key="sk-example",
        cache="on", cache_dir=str(directory),
    )  # fmt: skip
    program_lm = lm("executor")  # DSPy's own cache and retries are off: myopto's serve the role
    dspy.configure(lm=program_lm)

    demos, score = compile_and_evaluate("compile-1")
    print(f"compile 1: demos {demos}, score {score}, {server.request_count} calls reached the server")
    sent = server.request_count
    again = compile_and_evaluate("compile-2")
    print(f"compile 2: {server.request_count - sent} calls reached the server, same program: {again == (demos, score)}")

    server.stop()  # offline from here on
    set_role_config("executor", cache="replay")
    print(f"replay with the server stopped: same program: {compile_and_evaluate('replay') == (demos, score)}")

    for name in ("compile-1", "compile-2", "replay"):
        tally = get_usage_summary(run=name)["by_role"]["executor"]
        print(f"run {name}: {tally['calls']} calls, {tally['cache_hits']} from the cache, ${tally['cost']:.6f}")
    spent = sum(entry["cost"] for entry in program_lm.history)
    print(f"lm.history: {len(program_lm.history)} entries, ${spent:.6f} in all (myopto's cost in DSPy's history)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="myopto-dspy-")))
