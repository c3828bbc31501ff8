"""Every Python block of the README runs, as a reader would paste it, against the test server.

The cloud blocks reach the server through LiteLLM's own `OPENAI_BASE_URL` support; each block
starts from a clean router. Checks after each block assert what came back and what the server saw.
"""

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from myopto import clear_role_config
from myopto.router import ROUTER

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def _person(body):
    response_format = body.get("response_format") or {}
    if response_format.get("json_schema", {}).get("name") == "person_info":
        return {"name": "John", "age": 30}
    return "Hello! How can I help?"


def check_quick_start(server, out, namespace):
    assert out.strip() == "Hello! How can I help?"
    assert server.last_request.body["model"] == "gpt-4o-mini"
    assert ROUTER.resolve("optimizer").model == "gpt-4o"


def check_json(server, out, namespace):
    assert namespace["result"] == {"name": "John", "age": 30}
    sent = server.last_request.body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True


def check_litellm_models(server, out, namespace):
    assert ROUTER.resolve("optimizer").model == "claude-3-5-sonnet-latest"
    assert ROUTER.resolve("executor").model == "azure/gpt-4o"
    assert server.request_count == 0


def check_local(server, out, namespace):
    resolved = ROUTER.resolve("executor")
    assert resolved.backend == "LocalSLM"
    assert server.request_count == 0


def check_custom(server, out, namespace):
    resolved = ROUTER.resolve("executor")
    assert (resolved.backend, resolved.options["base_url"]) == ("CustomLLM", "http://localhost:8000/v1")


def check_migration(server, out, namespace):
    assert namespace["llm"].model == "gpt-4o-mini"


def check_middleware(server, out, namespace):
    assert ROUTER.chain("optimizer")[1].names == [
        "logging",
        "tracing",
        "usage",
        "house_rules",
        "structured_output",
        "cache",
        "retry",
        "limits",
    ]


def check_stream(server, out, namespace):
    assert server.last_request.body.get("stream") is True  # streamed from the provider, not faked
    assert namespace["response"].text and namespace["response"].text in out


CHECKS = [
    ("with llm.stream(messages", check_stream),
    ('llm = get_llm("executor")\nresponse', check_quick_start),
    ("json_schema={", check_json),
    ("azure/gpt-4o", check_litellm_models),
    ("use_mlx=True", check_local),
    ("TRACE_LOCALSLM_MODEL", check_local),
    ("vLLM server", check_custom),
    ("# Before (still works)", check_migration),
    ("def house_rules", check_middleware),
]


def test_readme_has_the_seed_blocks():
    assert len(BLOCKS) >= 8
    for marker, _ in CHECKS:
        assert any(marker in block for block in BLOCKS), marker


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(block, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    server.responder = _person
    clear_role_config()
    namespace: dict = {}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(block, str(README), "exec"), namespace)
    for marker, check in CHECKS:
        if marker in block:
            check(server, out.getvalue(), namespace)
