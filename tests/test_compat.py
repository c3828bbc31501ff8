"""Backward compatibility: the old `LLM` entry point, and Trace's optimisers running on myopto."""

import re
import subprocess
import sys

import pytest

from myopto import get_llm, set_role_config
from myopto.utils.llm import LLM


def test_llm_honours_the_environment(server, monkeypatch):
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "CustomLLM")
    monkeypatch.setenv("TRACE_CUSTOMLLM_URL", server.url)
    monkeypatch.setenv("TRACE_CUSTOMLLM_MODEL", "env-model")
    monkeypatch.setenv("TRACE_CUSTOMLLM_API_KEY", "sk-env-key")
    monkeypatch.setenv("TRACE_LLM_MODEL_OPTIMIZER", "optimizer-model")
    assert LLM()(messages=[{"role": "user", "content": "a"}]).model == "env-model"
    assert server.last_request.headers["authorization"] == "Bearer sk-env-key"
    assert LLM(role="optimizer")(messages=[{"role": "user", "content": "b"}]).model == "optimizer-model"


def test_llm_call_as_trace_makes_it(custom_role):
    custom_role.reply('{"reasoning": "r", "suggestion": {"x": 1}}')
    response = LLM()(
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        response_format={"type": "json_object"},
        max_tokens=4096,
    )
    assert response.choices[0].message.content == '{"reasoning": "r", "suggestion": {"x": 1}}'
    assert custom_role.last_request.body["response_format"] == {"type": "json_object"}
    assert custom_role.last_request.body["max_tokens"] == 4096


def test_llm_accepts_overrides(custom_role):
    LLM(model="override-model")(messages=[{"role": "user", "content": "a"}])
    assert custom_role.last_request.body["model"] == "override-model"


def _suggest_five(body):
    user = body["messages"][-1]["content"]
    name = re.search(r"#Variables\s*\n\(float\) (\w+)=", user).group(1)
    return {"reasoning": "the output must be 10, so the input must be 5", "suggestion": {name: 5.0}}


@pytest.mark.parametrize("structured_output", ["auto", "prompt"])
def test_trace_optoprime_step_takes_the_suggested_value(server, structured_output):
    from opto import trace
    from opto.optimizers import OptoPrime

    server.responder = _suggest_five
    set_role_config("optimizer", backend="CustomLLM", model="opt-model", base_url=server.url, structured_output=structured_output)
    x = trace.node(1.0, trainable=True)

    @trace.bundle()
    def double(value):
        return value * 2

    optimizer = OptoPrime([x], llm=get_llm("optimizer"))
    optimizer.zero_feedback()
    optimizer.backward(double(x), "The output should be 10.")
    optimizer.step()
    assert x.data == 5.0
    body = server.last_request.body
    if structured_output == "auto":
        assert body["response_format"] == {"type": "json_object"}
    else:  # as a local SLM gets it: no response_format, an instruction in the prompt
        assert "response_format" not in body
        assert "one valid JSON object" in body["messages"][-1]["content"]


def test_import_myopto_imports_no_sdk_and_no_torch():
    code = (
        "import sys, myopto, myopto.utils, myopto.utils.llm, myopto.backends, myopto.middleware, myopto.testing\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'litellm', 'openai', 'torch', 'transformers', 'mlx', 'jsonschema', 'redis', 'diskcache', 'llama_cpp', 'numpy', 'xgrammar', 'opentelemetry'})\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
