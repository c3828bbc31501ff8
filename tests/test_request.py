import dataclasses

import pytest

from myopto import InvalidRequest, Request


def make(**changes):
    fields = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "params": {"temperature": 0}}
    fields.update(changes)
    return Request(**fields)


def test_request_is_immutable_and_replace_makes_a_new_one():
    request = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.model = "other"
    with pytest.raises(TypeError):
        request.params["temperature"] = 1
    with pytest.raises(TypeError):
        request.messages[0]["content"] = "changed"
    changed = request.replace(model="other")
    assert changed.model == "other" and request.model == "m"


def test_request_copies_callers_messages_so_later_edits_do_not_leak_in():
    messages = [{"role": "user", "content": "hi"}]
    request = make(messages=messages)
    messages[0]["content"] = "edited"
    messages.append({"role": "user", "content": "more"})
    assert request.messages_list() == [{"role": "user", "content": "hi"}]


def test_fingerprint_is_stable_and_ignores_metadata_and_timeout():
    base = make()
    assert base.fingerprint() == make().fingerprint()
    assert base.fingerprint() == make(metadata={"run": "a"}, timeout=3).fingerprint()
    assert len(base.fingerprint()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"model": "m2"},
        {"messages": [{"role": "user", "content": "hello"}]},
        {"params": {"temperature": 0.5}},
        {"response_format": {"type": "json_object"}},
        {"backend": "LiteLLM"},
        {"endpoint": "http://elsewhere/v1"},
        {"metadata": {"sample": 2}},
    ],
)
def test_fingerprint_changes_with_what_decides_the_answer(change):
    assert make(**change).fingerprint() != make().fingerprint()


def test_fingerprint_does_not_depend_on_dict_order():
    one = make(params={"temperature": 0, "top_p": 1})
    two = make(params={"top_p": 1, "temperature": 0})
    assert one.fingerprint() == two.fingerprint()


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ("just a string", "must be a list"),
        ([], "empty"),
        (["hi"], "messages[0] must be a dict"),
        ([{"role": "robot", "content": "hi"}], "messages[0]['role'] is 'robot'"),
        ([{"role": "user"}], "has no 'content'"),
        ([{"role": "user", "content": 5}], "must be a string or a list"),
        ([{"role": "user", "content": [1, None]}], "messages[0]['content'][0] must be a content part"),
        ([{"role": "user", "content": [{"type": "text"}]}], "'text' is not a string"),
        (
            [{"role": "user", "content": "ok"}, {"role": "user", "content": "bad \ud800"}],
            "messages[1]['content'] holds an unpaired surrogate",
        ),
    ],
)
def test_malformed_messages_are_rejected_with_what_to_fix(messages, fragment):
    with pytest.raises(InvalidRequest) as error:
        make(messages=messages)
    assert fragment in str(error.value)
