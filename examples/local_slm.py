"""A role on a local model: text and JSON, with and without grammar constraints.

Uses the model given as the first argument (a hub id in the local cache, a folder, or a .gguf
file), else the embedded SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import sys

from myopto import StructuredOutputError
from myopto.backends.model_files import EMBEDDED_MODEL
from myopto.utils import get_llm, get_usage_summary, llm_json, llm_text, set_role_config

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def main(model: str) -> None:
    set_role_config("executor", backend="LocalSLM", model=model, max_new_tokens=60)
    print(get_llm("executor").describe(), "\n")
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
    main(sys.argv[1] if len(sys.argv) > 1 else EMBEDDED_MODEL)
