"""What the DSPy integration tests share: the test server answering as a model that follows
DSPy's adapters (ChatAdapter's `[[ ## field ## ]]` sections, JSONAdapter's JSON schema), a
scripted ReAct agent, small arithmetic programs, and pointing a role at a server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import dspy

from myopto import set_role_config

HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
# One field's value from the body of the last user message: field name, the request body.
Rule = Callable[[str, dict[str, Any]], Any]


def last_user(body: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def fields_asked(body: dict[str, Any]) -> list[str]:
    """The output fields a ChatAdapter prompt asks for, in order (its last line names them)."""
    line = last_user(body).strip().splitlines()[-1]
    return [name for name in HEADER.findall(line) if name != "completed"]


def input_value(body: dict[str, Any], name: str) -> str:
    """The value of input field `name` in the last user message ('' when absent)."""
    text = last_user(body)
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", text, re.S)
    return match.group(1).strip() if match else ""


def chat_text(values: dict[str, Any]) -> str:
    """An answer in ChatAdapter's format."""
    sections = [
        f"[[ ## {name} ## ]]\n{value if isinstance(value, str) else json.dumps(value)}"
        for name, value in values.items()
    ]
    return "\n\n".join([*sections, "[[ ## completed ## ]]"])


def answering(rule: Rule) -> Callable[[dict[str, Any]], str]:
    """A test-server responder that answers each field the prompt asks for with `rule(field,
    body)`: as JSON when a JSON schema was asked (JSONAdapter), else in ChatAdapter's format."""

    def respond(body: dict[str, Any]) -> str:
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            names = list(response_format["json_schema"]["schema"]["properties"])
            return json.dumps({name: rule(name, body) for name in names})
        if response_format.get("type") == "json_object":
            names = re.findall(r"`(\w+)`", last_user(body).strip().splitlines()[-1])
            return json.dumps({name: rule(name, body) for name in names})
        return chat_text({name: rule(name, body) for name in fields_asked(body)})

    return respond


def arithmetic(field: str, body: dict[str, Any]) -> Any:
    """A model that adds: the answer is the sum of the numbers in the question."""
    question = input_value(body, "question")
    total = sum(int(number) for number in re.findall(r"-?\d+", question))
    return {
        "answer": str(total),
        "reasoning": f"Adding the numbers of '{question}' gives {total}.",
        "count": total,
    }.get(field, f"{field} of {question}")


# -- the scripted agent: add two numbers, look up the weather, finish -----------------------
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


AGENT_STEPS = [
    ("I add the numbers first.", "add", {"a": 2, "b": 40}),
    ("Now the weather.", "weather", {"city": "Paris"}),
    ("I have everything.", "finish", {}),
]


def agent(field: str, body: dict[str, Any]) -> Any:
    """ReAct's model: one tool a turn (`AGENT_STEPS`), then the extraction step's answer."""
    trajectory = last_user(body)  # the trajectory's own [[ ## ... ## ]] sections are in it
    step = min(len(re.findall(r"\[\[ ## observation_\d+ ## \]\]", trajectory)), len(AGENT_STEPS) - 1)
    thought, tool, args = AGENT_STEPS[step]
    values = {"next_thought": thought, "next_tool_name": tool, "next_tool_args": args}
    if field in values:
        return values[field]
    observations = re.findall(r"\[\[ ## observation_\d+ ## \]\]\n(.*?)(?=\n\n|\Z)", trajectory, re.S)
    return {"reasoning": "From the observations.", "answer": " and ".join(o.strip() for o in observations)}.get(
        field, ""
    )


# -- programs -------------------------------------------------------------------------------
class Sum(dspy.Signature):
    """Add the numbers in the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    count: int = dspy.OutputField()


def serve_role(server: Any, backend: str, model: str, **options: Any) -> None:
    """The executor on the test server through `backend`, with no retries (and the options given)."""
    set_role_config("executor", backend=backend, model=model, base_url=server.url, api_key="sk-x", retries=0, **options)


def sums(count: int, start: int = 1) -> list[dspy.Example]:
    """`count` examples 'What is a plus b?' with their right answers."""
    return [
        dspy.Example(question=f"What is {a} plus {a + 1}?", answer=str(2 * a + 1)).with_inputs("question")
        for a in range(start, start + count)
    ]


def exact_answer(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


def compile_and_evaluate() -> tuple[list[str], float]:
    """Compile a ChainOfThought adder with BootstrapFewShot on four examples, then evaluate it on
    three others (with the LM `dspy.context` gives): the questions of its demos, and its score."""
    teleprompter = dspy.BootstrapFewShot(metric=exact_answer, max_bootstrapped_demos=2, max_labeled_demos=2)
    compiled = teleprompter.compile(dspy.ChainOfThought("question -> answer"), trainset=sums(4))
    evaluate = dspy.Evaluate(devset=sums(3, start=10), metric=exact_answer, num_threads=2, display_progress=False)
    score = float(evaluate(compiled).score)
    (predictor,) = compiled.predictors()
    return [demo.question for demo in predictor.demos], score
