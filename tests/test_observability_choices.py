"""Spans and call logs record everything a Response now carries: every choice's finish reason,
how many choices came back, the names of the functions called, cached and reasoning tokens; the
answers' text and the tools' arguments only when content capture is on, keys masked. Real HTTP
to the test server through CustomLLM and LiteLLM, the OpenTelemetry SDK's in-memory exporter, real
log files read back by `myopto logs`."""

from __future__ import annotations

import json

import pytest
from testkit import HTTP_BACKENDS, use_cache

import myopto
from myopto import configure_logging, get_llm, set_role_config
from myopto.cli import main
from myopto.logs import read_log
from myopto.testing import Answer

KEY = "sk-observe-secret-0123456789"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}, "note": {"type": "string"}},
            },
        },
    }
    for name in ("add", "mul")
]
REASONING = "two numbers so call both tools"  # 6 tokens on the test server
ARGUMENTS = {"a": 271828, "b": 314159, "note": f"my key is {KEY}"}


def two_choices(server):
    """The next request with n=2 answers: a choice calling two tools after some reasoning, and a
    plain text one."""
    server.reply(
        Answer(
            tool_calls=[
                {"id": "call_add", "name": "add", "arguments": ARGUMENTS},
                {"id": "call_mul", "name": "mul", "arguments": {"a": 6, "b": 7}},
            ],
            reasoning_content=REASONING,
        ),
        "a distinctive plain answer",
    )
    server.cached_tokens = 2


def ask(**options):
    return get_llm()("What are two plus three and six times seven", n=2, tools=TOOLS, **options)


@pytest.fixture(params=sorted(HTTP_BACKENDS))
def role(request, server, tmp_path):
    backend = request.param
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend], api_key=KEY)
    return backend


# -- spans ------------------------------------------------------------------------------------


@pytest.fixture
def spans(_exporter):
    _exporter.clear()
    return _exporter


def chat_spans(exporter):
    return [span for span in exporter.get_finished_spans() if span.name.startswith("chat ")]


def test_a_span_records_every_choice_the_tools_called_and_the_token_classes_but_no_content(role, server, spans):
    two_choices(server)
    response = ask()
    assert [choice.finish_reason for choice in response.choices] == ["tool_calls", "stop"]
    (span,) = chat_spans(spans)
    attributes = dict(span.attributes)
    assert attributes["gen_ai.request.choice.count"] == 2
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls", "stop")
    assert attributes["myopto.choices"] == 2
    assert attributes["myopto.tool_calls"] == ("add", "mul")
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 2 == response.usage.cached_tokens
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 6 == response.usage.reasoning_tokens
    assert attributes["gen_ai.usage.output_tokens"] == response.usage.completion_tokens
    assert "gen_ai.output.messages" not in attributes and "gen_ai.input.messages" not in attributes
    written = json.dumps(attributes)
    for content in ("271828", "distinctive", "call both tools", KEY):  # arguments, text, reasoning, key
        assert content not in written

    hit = ask()  # a cache hit says the same of the answer it serves
    assert hit.cached and server.request_count == 1
    _, cached = chat_spans(spans)
    assert cached.attributes["myopto.cached"] is True and cached.attributes["myopto.choices"] == 2
    assert cached.attributes["myopto.tool_calls"] == ("add", "mul")
    assert cached.attributes["gen_ai.response.finish_reasons"] == ("tool_calls", "stop")
    assert cached.attributes["gen_ai.usage.cache_read.input_tokens"] == 2


def test_with_capture_on_each_choice_is_an_output_message_with_its_tool_calls_masked(role, server, spans, monkeypatch):
    monkeypatch.setenv("MYOPTO_LOG_MESSAGES", "1")
    two_choices(server)
    ask()
    (span,) = chat_spans(spans)
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "finish_reason": "tool_calls",
            "parts": [
                {"type": "reasoning", "content": REASONING},
                {
                    "type": "tool_call",
                    "id": "call_add",
                    "name": "add",
                    "arguments": {"a": 271828, "b": 314159, "note": "my key is ***"},
                },
                {"type": "tool_call", "id": "call_mul", "name": "mul", "arguments": {"a": 6, "b": 7}},
            ],
        },
        {
            "role": "assistant",
            "finish_reason": "stop",
            "parts": [{"type": "text", "content": "a distinctive plain answer"}],
        },
    ]
    assert KEY not in json.dumps(dict(span.attributes))


def test_a_single_plain_choice_has_no_choice_count_nor_tool_calls(server, spans):
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, api_key=KEY)
    get_llm()("hello", n=1)
    (span,) = chat_spans(spans)
    assert "gen_ai.request.choice.count" not in span.attributes and "myopto.tool_calls" not in span.attributes
    assert span.attributes["myopto.choices"] == 1 and span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 0


def test_an_answer_without_a_finish_reason_is_recorded_as_stop(server, spans):
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, api_key=KEY)
    server.reply(Answer(content="cut", finish_reason=""), "fine")
    get_llm()("two please", n=2)
    (span,) = chat_spans(spans)
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop", "stop")


# -- call logs --------------------------------------------------------------------------------


def test_a_log_line_counts_choices_tokens_by_class_and_names_the_tools_but_holds_no_content(role, server, tmp_path):
    path = tmp_path / "calls.jsonl"
    configure_logging(path)
    try:
        two_choices(server)
        response = ask()
        ask()  # a cache hit
    finally:
        configure_logging()
    first, hit = read_log(path)
    for record in (first, hit):
        assert record["choices"] == 2 and record["tool_calls"] == ["add", "mul"]
        assert record["finish_reasons"] == ["tool_calls", "stop"] and record["finish_reason"] == "tool_calls"
        assert record["cached_tokens"] == 2 and record["reasoning_tokens"] == 6
        assert record["completion_tokens"] == response.usage.completion_tokens
    assert hit["cached"] is True and first["cached"] is False
    assert not {"answer", "answers", "tool_arguments", "messages"} & set(first)
    text = path.read_text()
    for content in ("271828", "distinctive", "call both tools", KEY):
        assert content not in text


def test_with_messages_on_a_log_line_has_every_answer_and_the_tool_arguments_masked(role, server, tmp_path):
    path = tmp_path / "calls.jsonl"
    configure_logging(path, messages=True)
    try:
        two_choices(server)
        ask()
    finally:
        configure_logging()
    (record,) = read_log(path)
    assert record["answers"] == [None, "a distinctive plain answer"] and record["answer"] == ""
    assert record["tool_arguments"] == [
        {"choice": 0, "id": "call_add", "name": "add", "arguments": json.dumps(ARGUMENTS).replace(KEY, "***")},
        {"choice": 0, "id": "call_mul", "name": "mul", "arguments": '{"a": 6, "b": 7}'},
    ]
    assert KEY not in path.read_text()


def test_a_plain_answer_logs_zero_cached_tokens_and_no_tool_fields(server, tmp_path):
    path = tmp_path / "calls.jsonl"
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url)
    configure_logging(path, messages=True)
    try:
        get_llm()("hello")
    finally:
        configure_logging()
    (record,) = read_log(path)
    assert (record["choices"], record["cached_tokens"], record["reasoning_tokens"]) == (1, 0, 0)
    assert record["answer"] == "echo: hello"
    assert not {"tool_calls", "finish_reasons", "answers", "tool_arguments"} & set(record)


def test_logs_summary_and_show_give_the_cached_tokens_of_a_real_run(server, tmp_path, capsys):
    path = tmp_path / "calls.jsonl"
    set_role_config("executor", backend="CustomLLM", model="gpt-4o-mini", base_url=server.url, api_key=KEY)
    configure_logging(path, messages=True)
    try:
        with myopto.run("cached-run"):
            server.cached_tokens = 3
            get_llm()("the long instructions sent every step")  # 6 prompt tokens, 3 from the prompt cache
            get_llm()("the long instructions sent every step again")  # 7, 3 cached
            two_choices(server)  # 2 cached
            ask()
    finally:
        configure_logging()
    assert main(["logs", "summary", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = lines[0].split()
    assert headers[:8] == ["run", "role", "model", "calls", "cache", "tokens", "cache-read", "cost"]
    tokens = sum(record["prompt_tokens"] + record["completion_tokens"] for record in read_log(path))
    assert lines[2].split()[:7] == ["cached-run", "executor", "gpt-4o-mini", "3", "0%", str(tokens), "8"]
    main(["logs", "summary", str(path), "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["cached_tokens"] == 8

    main(["logs", "show", str(path), "--last", "1"])
    shown = capsys.readouterr().out
    assert "(cache-read 2, reasoning 6)" in shown and "choices 2" in shown
    assert "  tool calls: add, mul" in shown
    assert "  [answer 0] (no text)\n  [answer 1] a distinctive plain answer\n" in shown
    assert '  [tool call mul] {"a": 6, "b": 7}' in shown
    assert KEY not in shown
    main(["logs", "show", str(path), "--run", "cached-run"])
    first = capsys.readouterr().out.split("\n\n")[0]
    assert "tokens 6+" in first and "(cache-read 3)" in first and "choices" not in first


# -- exports ----------------------------------------------------------------------------------

PARTS = [
    "Choice",
    "ChoiceLogprobs",
    "CompletionTokensDetails",
    "Function",
    "Message",
    "PromptTokensDetails",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
]


def test_the_parts_of_a_response_are_exported_where_response_is():
    import myopto.response
    import myopto.utils

    for name in PARTS:
        assert getattr(myopto, name) is getattr(myopto.response, name) is getattr(myopto.utils, name)
        assert name in myopto.__all__ and name in myopto.utils.__all__
    assert len(myopto.__all__) == len(set(myopto.__all__))
    assert all(hasattr(myopto, name) for name in myopto.__all__)


def test_the_test_server_s_answer_helpers_are_exported(server):
    import myopto.testing
    from myopto.testing import logprobs_for
    from myopto.testing.server import Answer as ServerAnswer

    assert Answer is ServerAnswer and {"Answer", "logprobs_for"} <= set(myopto.testing.__all__)
    set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url)
    server.reply("three little words")
    response = get_llm()("x", logprobs=True)
    assert response.choices[0].logprobs.to_dict() == logprobs_for("three little words")
