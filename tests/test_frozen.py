"""`myopto.frozen.changed`: the copy every middleware makes of a request or a response checks its
changes as `dataclasses.replace` does, and gives the same result."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from myopto import Request, Response
from myopto.frozen import changed
from myopto.response import Usage


def test_a_changed_request_equals_dataclasses_replace_and_gets_a_new_key():
    request = Request(model="m", messages=({"role": "user", "content": "hi"},), params={"temperature": 0})
    key = request.fingerprint()
    copy = request.replace(model="other", params={"temperature": 1, "top_p": [0.5]})
    assert copy == dataclasses.replace(request, model="other", params={"temperature": 1, "top_p": [0.5]})
    assert isinstance(copy.params, MappingProxyType)  # __post_init__ ran: the new params are frozen
    assert copy.fingerprint() != key
    assert request.fingerprint() == key and request.model == "m"
    same = request.replace(timeout=3.0)
    assert same.fingerprint() == key and same.timeout == 3.0


def test_changed_checks_messages_like_the_constructor():
    request = Request(model="m", messages=({"role": "user", "content": "hi"},))
    with pytest.raises(Exception, match="role"):
        request.replace(messages=[{"content": "no role"}])


def test_unknown_and_non_init_fields_are_refused_as_replace_refuses_them():
    request = Request(model="m", messages=({"role": "user", "content": "hi"},))
    with pytest.raises(TypeError, match="unexpected keyword argument 'modle'"):
        request.replace(modle="x")
    with pytest.raises(ValueError, match="init=False"):
        changed(request, {"_key": "forged"})


def test_a_changed_response_keeps_what_was_not_changed():
    response = Response(text="hello", model="m", usage=Usage.of(3, 2), cost=0.5)
    copy = response.replace(deployment="east", attempts=2)
    assert (copy.deployment, copy.attempts) == ("east", 2)
    assert (copy.id, copy.created, copy.text, copy.usage, copy.choices) == (
        response.id,
        response.created,
        response.text,
        response.usage,
        response.choices,
    )
    assert copy == dataclasses.replace(response, deployment="east", attempts=2)
    with pytest.raises(ValueError, match="deployment"):
        response.replace(deployment=7)  # __post_init__'s check runs on the copy
