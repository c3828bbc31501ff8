"""Bad input fails early and clearly: an `InvalidRequest`/`ConfigError` that says what to fix,
before anything is sent; bad provider data is a retryable `MalformedResponse`.

Everything runs against real servers with the real `openai` and `litellm` clients; each test
checks that the server saw nothing when the input was the caller's fault.
"""

import json
import math
from http.server import BaseHTTPRequestHandler

import pytest
from testkit import LoopbackHTTP, send_json

from myopto import ConfigError, InvalidRequest, MalformedResponse, get_llm, llm_json, set_role_config

SURROGATE = "caf\udce9"  # what bytes.decode("utf-8", errors="surrogateescape") leaves for a Latin-1 é


@pytest.fixture(params=["CustomLLM", "LiteLLM"])
def role(request, server):
    """The executor on the test server through each HTTP backend, with no retries."""
    model = "m" if request.param == "CustomLLM" else "openai/m"
    set_role_config("executor", backend=request.param, model=model, base_url=server.url, api_key="sk-k", retries=0)
    return server


@pytest.mark.parametrize("cache", ["on", "off"])
@pytest.mark.parametrize(
    "call",
    [
        lambda llm: llm([{"role": "user", "content": SURROGATE}]),
        lambda llm: llm([{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]),
        lambda llm: llm([{"role": "user", "content": "x", "name": SURROGATE}]),
        lambda llm: llm("x", stop=[SURROGATE]),
    ],
    ids=["content", "text part", "name", "stop"],
)
def test_a_lone_surrogate_is_an_invalid_request_before_sending(role, monkeypatch, cache, call):
    monkeypatch.setenv("MYOPTO_CACHE", cache)
    with pytest.raises(InvalidRequest, match="UTF-8"):
        call(get_llm())
    assert role.request_count == 0


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"top_p": math.nan},
        {"presence_penalty": math.nan},
        {"frequency_penalty": -math.inf},
        {"extra_body": {"penalty": math.nan}},
        {"logit_bias": {"42": math.inf}},
    ],
)
def test_a_parameter_that_is_not_a_finite_number_is_refused(role, params):
    with pytest.raises(InvalidRequest, match=next(iter(params))):
        get_llm()("x", **params)
    assert role.request_count == 0


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"timeout": math.nan}, "timeout must be a positive, finite number"),
        ({"timeout": math.inf}, "timeout must be a positive, finite number"),
        ({"deadline": math.inf}, "deadline must be a positive, finite number"),
        ({"deadline": math.nan}, "deadline must be a positive, finite number"),
        ({"deadline": "10"}, "deadline must be a positive, finite number"),
        ({"metadata": {"deadline": "10"}}, "deadline must be a positive, finite number"),
        ({"metadata": {"retries": -1}}, "retries must be a whole number"),
        ({"metadata": {"cache": "sometimes"}}, "cache must be one of"),
        ({"sample": object()}, "sample must be JSON data"),
        ({"sample": [1, {2, 3}]}, "sample must be JSON data"),
        ({"sample": math.nan}, "sample must be JSON data"),
        ({"metadata": {"sample": object()}}, "sample must be JSON data"),
    ],
)
def test_bad_per_call_options_are_refused_before_sending(role, options, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        get_llm()("x", **options)
    assert role.request_count == 0


def test_a_sample_that_is_json_data_is_accepted_and_keys_the_call(role, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    assert get_llm()("x", sample={"round": 1, "tags": ["a"]}).cached is False
    assert get_llm()("x", sample={"round": 1, "tags": ["a"]}).cached is True
    assert get_llm()("x", sample={"round": 2, "tags": ["a"]}).cached is False
    assert role.request_count == 2


@pytest.mark.parametrize(
    "content, fragment",
    [
        ([1, None], "messages[0]['content'][0] must be a content part"),
        ([{"type": "text", "text": "ok"}, None], "messages[0]['content'][1] must be a content part"),
        ([{"text": "no type"}], "must be a content part"),
        ([{"type": "text", "text": 5}], "'text' is not a string"),
    ],
)
def test_content_parts_must_be_dicts_with_a_type(role, content, fragment):
    with pytest.raises(InvalidRequest) as error:
        get_llm()([{"role": "user", "content": content}])
    assert fragment in str(error.value)
    assert role.request_count == 0


def test_image_parts_still_pass(role):
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert get_llm()([{"role": "user", "content": parts}]).text == "echo: what is this?"


@pytest.mark.parametrize(
    "schema, fragment",
    [
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}, "points outside the schema"),
        ({"$ref": "definitions.json#/a"}, "points outside the schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "points to nothing in the schema"),
        ({"anyOf": [{"$ref": "#nowhere"}]}, "points to nothing in the schema"),
    ],
)
def test_a_schema_that_refers_outside_itself_is_refused_before_the_paid_call(role, schema, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        llm_json("x", schema)
    with pytest.raises(InvalidRequest, match=fragment):
        get_llm()("x", response_format={"name": "s", "schema": schema})
    assert role.request_count == 0


def test_local_references_still_work(role):
    schema = {
        "type": "object",
        "properties": {"who": {"$ref": "#/$defs/person"}, "also": {"$ref": "#p"}},
        "required": ["who"],
        "$defs": {
            "person": {
                "$anchor": "p",
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            }
        },
    }
    role.reply({"who": {"name": "Ada"}})
    assert llm_json("x", schema) == {"who": {"name": "Ada"}}


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"timeout": -1}, "timeout"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"rpm": math.nan}, "rpm must be a finite number"),
        ({"max_cost_usd": math.inf}, "max_cost_usd must be a finite number"),
        ({"retry_backoff": math.nan}, "backoff"),  # checked by Retry, which the router asks
        ({"max_pause": math.nan}, "max_pause must be a number of seconds"),
        ({"max_pause": 0}, "max_pause must be a number of seconds"),
        ({"extra": "api_base=x"}, "extra must be a dict"),
        ({"cache_dir": 5}, "cache_dir must be a directory path"),
        ({"cache_dir": ""}, "cache_dir must be a directory path"),
    ],
)
def test_bad_role_options_are_refused_by_set_role_config(server, tmp_path, monkeypatch, options, fragment):
    monkeypatch.chdir(tmp_path)
    backend = "LiteLLM" if "extra" in options else "CustomLLM"
    with pytest.raises(ConfigError, match=fragment):
        set_role_config("executor", backend=backend, model="m", base_url=server.url, **options)
    assert list(tmp_path.iterdir()) == []  # cache_dir=5 made no ./5
    assert server.request_count == 0


def test_role_max_pause_reaches_the_limits_middleware(server):
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, max_pause=7)
    limits = next(m for m in get_llm().pipeline.middleware if m.name == "limits")
    assert limits.max_pause == 7.0


def test_a_pathlike_cache_dir_is_accepted(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, cache_dir=tmp_path / "answers")
    get_llm()("x")
    assert (tmp_path / "answers").is_dir()


# -- provider data ------------------------------------------------------------------------------


class ScriptedServer(LoopbackHTTP):
    """A real HTTP server that answers each chat completion with the next body a test gave it."""

    def __init__(self) -> None:
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                send_json(self, json.dumps(bodies.pop(0)).encode())

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/v1"


def completion(choice, usage=None):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [choice],
        "usage": usage or {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


GOOD = {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.close()


def test_a_choice_without_a_message_is_a_retryable_malformed_response(scripted):
    set_role_config("executor", backend="CustomLLM", model="m", base_url=scripted.url, retries=0)
    scripted.bodies.append(completion({"index": 0, "finish_reason": "stop"}))
    with pytest.raises(MalformedResponse, match="no message") as error:
        get_llm()("x")
    assert error.value.retryable
    # retried like any malformed body: the next answer is used
    set_role_config("executor", retries=1, retry_backoff=0.01)
    scripted.bodies += [completion({"index": 0, "finish_reason": "stop"}), completion(GOOD)]
    assert get_llm()("x").text == "fine"


def test_usage_given_as_numeric_strings_is_counted_and_other_usage_is_malformed(scripted):
    set_role_config("executor", backend="CustomLLM", model="m", base_url=scripted.url, retries=0)
    scripted.bodies.append(completion(GOOD, {"prompt_tokens": "12", "completion_tokens": "3.0", "total_tokens": "15"}))
    usage = get_llm()("x").usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 3, 15)
    for bad in ("lots", "-3", "2.5"):
        scripted.bodies.append(completion(GOOD, {"prompt_tokens": bad, "completion_tokens": 1, "total_tokens": 2}))
        with pytest.raises(MalformedResponse, match="prompt_tokens") as error:
            get_llm()("x")
        assert error.value.retryable


@pytest.mark.parametrize("cache", ["on", "off"])
@pytest.mark.parametrize(
    "message, fragment",
    [
        ({"role": "user", "content": "x", 5: "int key"}, "field named 5"),
        ({"role": "user", "content": "x", "name": {"a", "set"}}, "messages[0]['name'] must be JSON data"),
        ({"role": "user", "content": "x", "name": b"bytes"}, "messages[0]['name'] must be JSON data"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": b"raw"}}]},
            "messages[0]['content'][0] must be JSON data",
        ),
    ],
    ids=["int field name", "set", "bytes", "bytes in a part"],
)
def test_message_fields_that_are_not_json_data_are_refused_before_sending(role, monkeypatch, cache, message, fragment):
    monkeypatch.setenv("MYOPTO_CACHE", cache)
    with pytest.raises(InvalidRequest) as error:
        get_llm()([message])
    assert fragment in str(error.value)
    assert role.request_count == 0


@pytest.mark.parametrize("model", [5, "", "  ", ["m"]])
def test_a_per_call_model_that_is_not_a_name_is_refused_before_sending(role, model):
    with pytest.raises(InvalidRequest, match="model must be a non-empty string"):
        get_llm()("x", model=model)
    assert role.request_count == 0


@pytest.mark.parametrize(
    "metadata, fragment",
    [
        ({"run": object()}, "metadata['run'] must be a run name"),
        ({"tags": {"a": object()}}, "metadata['tags'] must be JSON data"),
    ],
)
def test_a_run_or_tags_that_cannot_be_recorded_are_refused_before_sending(role, metadata, fragment):
    with pytest.raises(InvalidRequest) as error:
        get_llm()("x", metadata=metadata)
    assert fragment in str(error.value)
    assert role.request_count == 0


ADD = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}},
}


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"tools": [{"type": "function"}]}, "without a 'function' dict"),
        ({"tools": [{"type": "function", "function": {"name": "add me"}}]}, "1-64 letters"),
        ({"tools": [ADD, ADD]}, "declares the function 'add' twice"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
            "its parameters are not a usable JSON schema",
        ),
        (
            {"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "sub"}}},
            "which tools does not declare",
        ),
        ({"tools": [ADD], "tool_choice": "always"}, "tool_choice must be one of"),
        ({"tools": [], "tool_choice": "required"}, "needs at least one function"),
        ({"tool_choice": {"type": "function"}}, "tool_choice naming a function is"),
    ],
    ids=["no function", "bad name", "twice", "bad schema", "unknown tool", "bad choice", "required, none", "no name"],
)
def test_tools_and_tool_choice_that_cannot_work_are_refused_before_sending(role, params, fragment):
    with pytest.raises(InvalidRequest) as error:
        get_llm()("add 2 and 3", **params)
    assert fragment in str(error.value)
    assert role.request_count == 0


def test_valid_tools_and_a_named_tool_choice_are_sent(role):
    get_llm()(
        "add 2 and 3",
        tools=[ADD, {"type": "web_search"}],
        tool_choice={"type": "function", "function": {"name": "add"}},
    )
    sent = role.last_request.body
    assert [tool.get("function", {}).get("name") for tool in sent["tools"]] == ["add", None]
    assert sent["tool_choice"]["function"]["name"] == "add"
