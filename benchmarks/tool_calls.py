"""Workload 8: tool calls on the embedded SmolLM2 (llama.cpp), decoded under the tools' grammar,
against the same prompts decoded without one. Both sides see the same messages (the tools
described in the system message) and write the same number of tokens at most; the constrained side
also masks every step and closes its call. Prints one JSON list of rows on its last line.

    python benchmarks/tool_calls.py [--quick]
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ["MYOPTO_CACHE"] = "off"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import Row, ratio_to

LABEL = "8 local tool calls: smollm2, llama.cpp"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]
QUESTIONS = [
    "What's the weather in Paris?",
    "What is 2 plus 3?",
    "Is it cold in Oslo?",
    "Add 40 and 2.",
    "How warm is Lima in fahrenheit?",
    "What is 7 + 8?",
    "Sum 1 and 99.",
    "Weather for Tokyo please",
]


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 2 if quick else 5
    from myopto import get_llm, set_role_config
    from myopto.backends.local_tools import local_messages, tool_plan
    from myopto.backends.model_files import EMBEDDED_MODEL

    set_role_config("bench", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", max_batch_size=8, reasks=0)
    llm = get_llm("bench")
    plan = tool_plan(TOOLS, "required")
    described = {q: local_messages([{"role": "user", "content": q}], plan) for q in QUESTIONS}

    def constrained(question: str) -> int:
        response = llm(question, tools=TOOLS, tool_choice="required", max_tokens=48)
        assert response.choices[0].message.tool_calls, "a required call came back without one"
        return response.usage.completion_tokens

    def free(question: str) -> int:
        return llm(described[question], max_tokens=48).usage.completion_tokens

    constrained(QUESTIONS[0])  # the grammar compiles once per schema: not timed
    free(QUESTIONS[0])

    def one_stream(call) -> float:
        begin, produced = time.perf_counter(), sum(call(q) for q in QUESTIONS)
        return produced / (time.perf_counter() - begin)

    def burst(call) -> float:
        begin = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
            produced = sum(pool.map(call, QUESTIONS))
        return produced / (time.perf_counter() - begin)

    rows = []
    for pattern, run in (("one stream", one_stream), ("8-way burst", burst)):
        anchor = Row(LABEL, f"unconstrained, same prompts ({pattern})", [run(free) for _ in range(repeats)], "tokens/s")
        ours = Row(
            LABEL,
            f'tool_choice="required" under the tools\' grammar ({pattern})',
            [run(constrained) for _ in range(repeats)],
            "tokens/s",
            goal="≥ 0.8",
        )
        rows += [anchor, ratio_to(ours, anchor)]
    print(json.dumps([dataclasses.asdict(row) for row in rows]))


if __name__ == "__main__":
    main()
