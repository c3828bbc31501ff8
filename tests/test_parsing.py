import pytest

from myopto import Response, extract_text, try_parse_json


def test_extract_text_from_every_common_shape():
    from litellm import ModelResponse
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "from openai"}, "finish_reason": "stop"}
            ],
        }
    )
    litellm_response = ModelResponse(choices=[{"message": {"role": "assistant", "content": "from litellm"}}])
    assert extract_text("plain") == "plain"
    assert extract_text(Response(text="ours")) == "ours"
    assert extract_text(completion) == "from openai"
    assert extract_text(litellm_response) == "from litellm"
    assert extract_text({"choices": [{"message": {"content": "dict"}}]}) == "dict"
    assert extract_text({"role": "assistant", "content": "message dict"}) == "message dict"
    assert extract_text({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}) == "ab"
    assert extract_text(None) == ""


def test_extract_text_rejects_what_has_no_text():
    with pytest.raises(TypeError, match="cannot find the answer text"):
        extract_text(42)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2] ", [1, 2]),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 2}\n```', {"a": 2}),
        ('Sure! Here it is:\n```json\n{"a": 3}\n```\nHope that helps.', {"a": 3}),
        ('The answer is {"a": {"b": [1, 2]}} as requested.', {"a": {"b": [1, 2]}}),
        ('noise {not json} then {"ok": true}', {"ok": True}),
    ],
)
def test_try_parse_json_finds_the_json(text, expected):
    assert try_parse_json(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no json here", "{broken", None, "```python\nprint(1)\n```"])
def test_try_parse_json_returns_none_when_nothing_parses(text):
    assert try_parse_json(text) is None


def test_try_parse_json_reads_a_response_object():
    assert try_parse_json(Response(text='{"x": 1}')) == {"x": 1}


def test_a_json_null_is_told_apart_from_no_json_with_a_default():
    from myopto.parsing import NO_JSON

    assert try_parse_json("null", default=NO_JSON) is None
    assert try_parse_json("```json\nnull\n```", default=NO_JSON) is None
    assert try_parse_json("no json here", default=NO_JSON) is NO_JSON
    assert try_parse_json("", default=NO_JSON) is NO_JSON
    assert try_parse_json("no json here") is None  # the default default


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "[" * n + "]" * n,  # valid JSON nested deeper than the decoder goes
        lambda n: "Here you are: " + "[" * n,
        lambda n: '{"a": ' * (n // 6),
        lambda n: "[1, " * (n // 4),
        lambda n: "{" * n + '{"ok": true}',
        lambda n: "[x] " * (n // 4) + '{"ok": true}',
        lambda n: "[1 of 3] " * (n // 9) + '{"ok": true}',  # many starts that fail: the search gives up
    ],
    ids=[
        "deep-valid",
        "openers",
        "nested-objects",
        "nested-lists",
        "braces-then-object",
        "brackets-then-object",
        "failing-starts",
    ],
)
def test_try_parse_json_takes_time_linear_in_the_text(make):
    import time

    small, large = make(8_000), make(64_000)
    start = time.perf_counter()
    expected = try_parse_json(small)
    took_small = time.perf_counter() - start
    start = time.perf_counter()
    assert try_parse_json(large) == expected
    took_large = time.perf_counter() - start
    # 8x the text: ~8x the time when linear, ~64x when quadratic (0.1-0.3 s for 8 KB before,
    # ~2 ms for 64 KB now)
    assert took_large < 0.25, (took_small, took_large)
