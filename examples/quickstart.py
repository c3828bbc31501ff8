"""Quick start, as a small experiment: three roles, text and JSON calls, and what they cost.

Run with `make demo`. With OPENAI_API_KEY set it calls gpt-4o-mini / gpt-4o through LiteLLM.
Without it, it runs against myopto's own OpenAI-compatible test server on 127.0.0.1 (answers
are echoes; the embedded local model replaces it when the LocalSLM backend lands) and says so.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from myopto.testing import FakeOpenAIServer  # noqa: E402
from myopto.utils import get_llm, llm_json, llm_text, print_usage_summary, set_role_config, set_role_models  # noqa: E402

PERSON = {
    "name": "person_info",
    "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "strict": True,
}

QUESTIONS = [
    "What is the capital of France? Answer in one word.",
    "Name one prime number greater than 10.",
]


def configure() -> FakeOpenAIServer | None:
    """Point the roles at a real provider when a key is set, else at the local test server."""
    if os.environ.get("OPENAI_API_KEY"):
        set_role_models(executor="gpt-4o-mini", optimizer="gpt-4o", metaoptimizer="gpt-4o")
        print("Using OpenAI through LiteLLM (OPENAI_API_KEY is set).")
        return None
    server = FakeOpenAIServer().start()
    for role in ("executor", "optimizer", "metaoptimizer"):
        set_role_config(role, backend="CustomLLM", model=f"demo-{role}", base_url=server.url)
    print(f"No OPENAI_API_KEY: using myopto's test server at {server.url} (it echoes; answers are not real).")
    return server


def main() -> None:
    server = configure()
    try:
        llm = get_llm("executor")
        print(f"executor: {llm.backend} / {llm.model}")
        response = llm(messages=[{"role": "user", "content": "Hello!"}])
        print("Hello! ->", response.choices[0].message.content)
        for question in QUESTIONS:
            print(f"Q: {question}\nA: {llm_text(question, temperature=0)}")
        person = llm_json("Extract the person's name and age from: John is 30 years old.", json_schema=PERSON)
        print("llm_json ->", person)
        advice = llm_text("Suggest one way to make the executor's answers shorter.", role="optimizer")
        print("optimizer ->", advice)
        print()
        print_usage_summary()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
