import json

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
