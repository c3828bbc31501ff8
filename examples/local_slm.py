"""A role on a local model: text and JSON, with and without grammar constraints.

Uses the model given as the first argument (a hub id in the local cache, a folder, or a .gguf
file), else the embedded SmolLM2-135M-Instruct. A .gguf file runs on llama.cpp when
llama-cpp-python is installed, anything else on transformers; a second argument (llama.cpp,
transformers, mlx) picks the engine.
"""

from __future__ import annotations

import sys

from myopto import StructuredOutputError
from myopto.backends.local_slm import choose_engine
from myopto.backends.model_files import EMBEDDED_MODEL
from myopto.utils import get_llm, get_usage_summary, llm_json, llm_text, set_role_config

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def main(model: str, engine: str = "auto") -> None:
    set_role_config("executor", backend="LocalSLM", model=model, engine=engine, max_new_tokens=60)
    print(get_llm("executor").describe())
    print(f"engine: {choose_engine(model, engine)}\n")
    print("text:", llm_text("What is the capital of France? Answer in one word."))
    prompt = "Extract the person's name and age from: John is 30 years old."
    try:
        print("JSON by instruction only:", llm_json(prompt, PERSON))
    except StructuredOutputError as error:
        print("JSON by instruction only failed:", repr(error.response.text[:100]))
    print("JSON with constraints:   ", llm_json(prompt, PERSON, constrained=True))
    tokens = get_usage_summary()["by_role"]["executor"]
    print(f"\n{tokens['calls']} calls, {tokens['total_tokens']} tokens, cost ${tokens['cost']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else EMBEDDED_MODEL, *sys.argv[2:3])
