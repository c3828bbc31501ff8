import json

import pytest
from testkit import PLAIN_ANSWER_FIELDS

from myopto import Response, Usage


def test_response_reads_like_an_openai_chat_completion():
    response = Response(text="hello", model="m", usage=Usage.of(3, 2))
    assert response.choices[0].message.content == "hello"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == 3 and response.usage.total_tokens == 5
    assert response["choices"][0]["message"]["content"] == "hello"
    assert response.usage["completion_tokens"] == 2
    assert response.object == "chat.completion"


def test_to_dict_round_trips_through_json_without_raw():
    response = Response(text="{}", model="m", usage=Usage.of(1, 1), cost=0.5, parsed={}, raw=object())
    data = json.loads(json.dumps(response.to_dict()))
    assert "raw" not in data
    again = Response.from_dict(data)
    assert again == response  # raw is not compared
    assert again.raw is None


def test_model_dump_is_an_openai_shaped_dict():
    dumped = Response(text="x", model="m").model_dump()
    assert dumped["choices"][0]["message"] == {"role": "assistant", "content": "x"}
    assert dumped["object"] == "chat.completion"


# -- a complete, faithful response (issue 20) ------------------------------------------------

from myopto.response import Choice, ChoiceLogprobs, Message, TokenLogprob, ToolCall  # noqa: E402

FULL = Response(
    text="",
    model="m",
    usage=Usage.of(10, 12, cached_tokens=6, reasoning_tokens=4),
    cost=0.25,
    finish_reason="tool_calls",
    choices=[
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "reasoning_content": "I should add",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
                ],
            },
        },
        {
            "index": 1,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "three"},
            "logprobs": {
                "content": [
                    {
                        "token": "three",
                        "logprob": -0.5,
                        "bytes": [116, 104, 114, 101, 101],
                        "top_logprobs": [{"token": "three", "logprob": -0.5, "bytes": None}],
                    }
                ],
                "refusal": None,
            },
        },
    ],
)


def test_every_choice_reads_like_openais_by_attribute_and_by_item():
    first, second = FULL.choices
    call = first.message.tool_calls[0]
    assert (call.id, call.type, call.function.name, call.function.arguments) == (
        "call_1",
        "function",
        "add",
        '{"a": 1}',
    )
    assert FULL["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "add"
    assert first.message.reasoning_content == "I should add" and first.message.content is None
    assert second.logprobs.content[0].top_logprobs[0].logprob == -0.5
    assert second["logprobs"]["content"][0]["bytes"] == tuple(b"three")
    assert (first.finish_reason, second.finish_reason) == ("tool_calls", "stop")
    assert isinstance(first, Choice) and isinstance(first.message, Message) and isinstance(call, ToolCall)
    assert isinstance(second.logprobs, ChoiceLogprobs) and isinstance(second.logprobs.content[0], TokenLogprob)


def test_usage_names_cached_and_reasoning_tokens_as_openai_does():
    usage = FULL.usage
    assert usage.prompt_tokens_details.cached_tokens == 6 and usage["prompt_tokens_details"]["cached_tokens"] == 6
    assert usage.completion_tokens_details.reasoning_tokens == 4
    assert usage.completion_tokens_details["reasoning_tokens"] == 4
    assert Usage.of(1, 2).prompt_tokens_details.cached_tokens == 0  # present, 0, when not reported
    assert (usage + Usage.of(1, 1, cached_tokens=1)).prompt_tokens_details.cached_tokens == 7


def test_model_dump_holds_every_choice_and_the_usage_details():
    dumped = FULL.model_dump()
    assert [choice["index"] for choice in dumped["choices"]] == [0, 1]
    assert dumped["choices"][0]["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    ]
    assert dumped["choices"][0]["message"]["reasoning_content"] == "I should add"
    assert dumped["choices"][0]["logprobs"] is None
    assert dumped["choices"][1]["logprobs"]["content"][0]["bytes"] == [116, 104, 114, 101, 101]
    assert dumped["usage"]["prompt_tokens_details"] == {"cached_tokens": 6}
    assert dumped["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert json.loads(json.dumps(dumped)) == dumped


def test_a_full_response_round_trips_through_json_identically():
    data = json.loads(json.dumps(FULL.to_dict()))
    assert Response.from_dict(data) == FULL
    assert Response.from_dict(data).model_dump() == FULL.model_dump()


def test_a_plain_answer_is_stored_in_the_shape_it_always_had():
    data = Response(text="hi", model="m", usage=Usage.of(1, 1)).to_dict()
    assert set(data) == PLAIN_ANSWER_FIELDS
    assert data["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


def test_a_record_from_before_choices_existed_reads_as_one_choice():
    old = {
        "text": "hi",
        "model": "m",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "cost": 0.1,
        "parsed": None,
        "cached": False,
        "latency": 0.2,
        "finish_reason": "length",
        "id": "chatcmpl-x",
        "created": 1,
    }
    response = Response.from_dict(old)
    assert len(response.choices) == 1 and response.choices[0].message.content == "hi"
    assert response.choices[0].finish_reason == "length" and response.usage.prompt_tokens_details.cached_tokens == 0


def test_the_parts_cannot_be_changed_by_one_caller_under_another():
    assert isinstance(FULL.choices, tuple) and isinstance(FULL.choices[0].message.tool_calls, tuple)
    with pytest.raises(AttributeError):
        FULL.choices[0].message.content = "changed"


def test_replace_keeps_text_and_the_first_choice_in_step():
    changed = FULL.replace(text="now text", parsed={"a": 1})
    assert changed.choices[0].message.content == "now text" and changed.choices[0].message.parsed == {"a": 1}
    assert changed.choices[0].message.tool_calls == FULL.choices[0].message.tool_calls
    assert changed.choices[1] == FULL.choices[1]
    swapped = FULL.replace(choices=[FULL.choices[1], FULL.choices[0]])
    assert swapped.text == "three" and swapped.finish_reason == "stop"


@pytest.mark.parametrize(
    "choices",
    [
        [{"message": {"content": 3}}],
        [{"message": {"content": "x", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}}],
        [{"message": {"content": "x"}, "index": -1}],
        [{"message": {"content": "x"}, "logprobs": {"content": [{"token": "x", "logprob": True}]}}],
    ],
)
def test_choices_that_are_not_choices_are_refused(choices):
    with pytest.raises((TypeError, ValueError)):
        Response(text="x", choices=choices)
