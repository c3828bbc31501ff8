"""Findings of an attacker's review, each fixed and held here: deeply nested cache records,
keys in the exception chain, a Retry-After that is no number, headers a proxy routes on,
parameters that are not JSON data, budgets on cached tokens and n choices, and LocalSLM asked
for n choices. Real test servers, the real openai and litellm clients, real files."""

from __future__ import annotations

import asyncio
import decimal
import fractions
import json
import traceback
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import numpy as np
import pytest
from testkit import LoopbackHTTP, serve

from myopto import (
    AuthenticationFailed,
    BackendError,
    BudgetExceeded,
    DamagedCacheEntry,
    InvalidRequest,
    RateLimited,
    ServerError,
    get_llm,
    set_role_config,
)
from myopto.backends.base import ProviderError
from myopto.cache_transfer import export_file, import_records, read_line
from myopto.middleware.limits import estimate_tokens
from myopto.request import Request
from myopto.stores import open_store
from myopto.stores.memory import decode_record
from myopto.testing import FakeOpenAIServer
from myopto.testing.server import Answer

DEEP = "[" * 5000 + "]" * 5000  # valid JSON, deeper than Python's recursion limit


# -- 1. a deeply nested record is a damaged entry, or a refused line -------------------------------


def test_a_deeply_nested_stored_record_is_a_damaged_entry():
    with pytest.raises(DamagedCacheEntry, match="nested too deep"):
        decode_record(
            '{"version": 1, "response": {"text": "x", "parsed": ' + DEEP + "}}", key="k" * 64, location="here"
        )
    with pytest.raises(DamagedCacheEntry, match="nested too deep"):
        decode_record(DEEP, key="k" * 64, location="here")


def test_export_skips_a_deeply_nested_entry_and_import_reports_its_line(custom_role, monkeypatch, tmp_path):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    get_llm()("good")
    get_llm()("deep")
    store = open_store(str(tmp_path / "cache"))
    ((key, record),) = [(k, r) for k, r in store.items() if r["request"]["messages"][-1]["content"] == "deep"]
    store.memory.clear()
    store._write(
        key, json.dumps(record).replace('"parsed": null', '"parsed": ' + DEEP)
    )  # what a foreign folder can hold
    count, damaged = export_file(store, tmp_path / "out.jsonl")
    assert count == 1 and [entry.key for entry in damaged] == [key]
    assert "nested too deep" in str(damaged[0])

    lines = (tmp_path / "out.jsonl").read_text() + '{"key": "x", "a": ' + DEEP + "}\n"
    (tmp_path / "in.jsonl").write_text(lines)
    with pytest.raises(InvalidRequest, match="nested too deep"):
        read_line('{"key": "x", "a": ' + DEEP + "}")
    report = import_records(open_store(str(tmp_path / "other")), tmp_path / "in.jsonl")
    assert report.imported == 1
    assert report.problems == [(2, "JSON nested too deep to read")]


# -- 2. no key in the printed exception chain ------------------------------------------------------

MARKER = "sk-MARKER-0123456789abcdef"


def _carriers(url):
    password_url = url.replace("http://", f"http://user:{MARKER}@")
    custom = {"backend": "CustomLLM", "model": "m", "base_url": url}
    lite = {"backend": "LiteLLM", "model": "openai/m", "base_url": url}
    return {
        "api_key": {**custom, "api_key": MARKER},
        "x-api-key header": {**custom, "extra_headers": {"x-api-key": MARKER}},
        "base_url password": {**custom, "base_url": password_url},
        "base_url ?api-key": {**custom, "base_url": url + f"?api-key={MARKER}"},
        "LiteLLM api_key": {**lite, "api_key": MARKER},
        "LiteLLM extra api_key": {**lite, "extra": {"api_key": MARKER}},
    }


@pytest.mark.parametrize("carrier", list(_carriers("http://h")))
@pytest.mark.parametrize("status, kind", [(401, AuthenticationFailed), (500, ServerError)])
@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_key_quoted_back_by_the_provider_is_not_in_the_printed_exception_chain(
    server, carrier, status, kind, asynchronous
):
    set_role_config("executor", retries=0, **_carriers(server.url)[carrier])
    server.fail(status, message=f"Incorrect API key provided: {MARKER}")
    with pytest.raises(BackendError) as caught:
        if asynchronous:
            asyncio.run(get_llm().acall("x"))
        else:
            get_llm()("x")
    printed = "".join(traceback.format_exception(caught.value))
    assert MARKER not in printed
    cause = caught.value.__cause__
    assert isinstance(cause, ProviderError) and cause.sdk_type.split(".")[0] in ("openai", "litellm")
    if carrier != "base_url ?api-key":  # the SDK adds its path after that query: a 404 quoting the URL
        assert isinstance(caught.value, kind) and cause.status_code == status  # the SDK's kind and status stay
        assert "Incorrect API key provided" in str(cause)
    assert caught.value.__context__ is None or caught.value.__suppress_context__


@pytest.mark.parametrize("backend, model", [("CustomLLM", "m"), ("LiteLLM", "openai/m")])
def test_a_key_stays_out_of_the_chain_after_retries(server, backend, model):
    set_role_config(
        "executor", backend=backend, model=model, base_url=server.url, api_key=MARKER, retries=2, retry_backoff=0.001
    )
    server.fail(500, times=3, message=f"Incorrect API key provided: {MARKER}")
    with pytest.raises(ServerError) as caught:
        get_llm()("x")
    assert caught.value.attempts == 3
    assert MARKER not in "".join(traceback.format_exception(caught.value))


# -- 3. a Retry-After that is no number ------------------------------------------------------------


class _Answers429(BaseHTTPRequestHandler):
    headers_to_send: ClassVar[dict[str, str]] = {}

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": {"message": "slow down", "type": "rate_limit", "code": "429"}}).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in self.headers_to_send.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def rate_limiting_server():
    server = LoopbackHTTP(_Answers429)
    yield f"http://127.0.0.1:{server.port}/v1"
    server.close()


@pytest.mark.parametrize("backend, model", [("CustomLLM", "m"), ("LiteLLM", "openai/m")])
@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"retry-after-ms": "abc"}, None),
        ({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0),  # the one that is a number is read
        ({"Retry-After": "0x10"}, None),
    ],
)
def test_a_retry_after_that_is_no_number_is_ignored_and_the_429_stays_rate_limited(
    rate_limiting_server, backend, model, headers, expected, monkeypatch
):
    monkeypatch.setattr(_Answers429, "headers_to_send", headers)
    set_role_config("executor", backend=backend, model=model, base_url=rate_limiting_server, api_key="sk-x", retries=0)
    with pytest.raises(RateLimited) as caught:
        get_llm()("x")
    assert caught.value.retry_after == expected and caught.value.retryable


# -- 4. headers a proxy routes on are in the key; credential headers are not ------------------------


@pytest.fixture
def routing_server():
    server = FakeOpenAIServer().start()
    server.responder = lambda body: "route=" + server.last_request.headers.get("x-route", "none")
    yield server
    server.stop()


@pytest.mark.parametrize("backend, model", [("CustomLLM", "m"), ("LiteLLM", "openai/m")])
def test_a_header_a_proxy_routes_on_is_part_of_the_cache_key(routing_server, backend, model, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    answers = []
    for route in ("alpha", "beta", "alpha"):
        serve(routing_server, backend=backend, model=model, api_key="sk-x", extra_headers={"X-Route": route})
        response = get_llm()("same prompt")
        answers.append((response.text, response.cached))
    assert answers == [("route=alpha", False), ("route=beta", False), ("route=alpha", True)]
    assert routing_server.request_count == 2


@pytest.mark.parametrize("backend, model", [("CustomLLM", "m"), ("LiteLLM", "openai/m")])
def test_credential_headers_stay_out_of_the_cache_key(routing_server, backend, model, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    for secret in ("sk-first-secret-000", "sk-second-secret-111"):
        serve(
            routing_server,
            backend=backend,
            model=model,
            api_key="sk-x",
            extra_headers={
                "x-api-key": secret,
                "Authorization": f"Bearer {secret}",
                "x-portkey-token": secret,
                "x-route": "a",
            },
        )
        assert get_llm()("same prompt").text == "route=a"
    assert routing_server.request_count == 1  # one destination: the second key was served from the cache
    from myopto.router import ROUTER

    endpoint = ROUTER.chain("executor")[1].backend.endpoint()
    assert 'headers={"x-route":"a"}' in endpoint and "secret" not in endpoint


def test_litellm_keys_the_headers_given_in_extra(routing_server, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    for route in ("alpha", "beta"):
        set_role_config(
            "executor",
            backend="LiteLLM",
            model="openai/m",
            base_url=routing_server.url,
            api_key="sk-x",
            extra={"extra_headers": {"x-route": route}},
        )
        assert get_llm()("same").text == f"route={route}"
    assert routing_server.request_count == 2


# -- 5. parameters that are not JSON data, or of a type no provider takes ---------------------------

_deep: list = []
for _ in range(5000):
    _deep = [_deep]


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": fractions.Fraction(1, 2)},
        {"temperature": np.int64(1)},
        {"top_p": np.float32(0.5)},
        {"extra_body": {"x": _deep}},
        {"extra_body": {"x": decimal.Decimal("1.5")}},
        {"extra_body": {"x": {1, 2}}},
        {"extra_body": {"x": b"ab"}},
        {"extra_body": {"x": object()}},
        {"extra_body": {1: "a"}},
        {"tools": [object()]},
        {"tools": "abc"},
        {"tools": [["not", "a", "dict"]]},
        {"tool_choice": object()},
        {"tool_choice": 3},
        {"logprobs": "yes"},
        {"top_logprobs": -3},
        {"top_logprobs": 21},
        {"top_logprobs": True},
        {"user": 5},
        {"presence_penalty": "high"},
        {"logit_bias": {"x": 5}},
        {"logit_bias": {1: 5, "1": 6}},
    ],
)
def test_a_parameter_that_is_not_json_data_or_of_the_wrong_type_is_refused_before_sending(custom_role, params):
    name = next(iter(params))
    with pytest.raises(InvalidRequest, match=name):
        get_llm()("x", **params)
    assert custom_role.request_count == 0


def test_logit_bias_token_ids_given_as_ints_are_sent_as_json_sends_them(custom_role):
    get_llm()("x", logit_bias={42: 5, "7": -1})
    assert custom_role.last_request.body["logit_bias"] == {"42": 5, "7": -1}


# -- 6. budgets price cached tokens and estimates count every choice --------------------------------


def test_a_budget_with_its_own_pricing_prices_cached_tokens_at_the_cached_price(server):
    pricing = {"input": 1.0, "output": 0.0, "cached_input": 0.1}
    serve(server, model="test-model", api_key="sk-x", retries=0, pricing=pricing, max_cost_usd=0.3)
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 900_000}}
    server.reply(Answer("one", usage=usage), Answer("two", usage=usage))
    assert [get_llm()(prompt).text for prompt in ("a", "b")] == ["one", "two"]  # $0.19 each, not $1
    with pytest.raises(BudgetExceeded) as caught:
        get_llm()("c")
    assert caught.value.spent == pytest.approx(0.38)
    assert server.request_count == 2


def test_the_token_estimate_counts_the_completion_cap_once_per_choice():
    request = Request(model="m", messages=[{"role": "user", "content": "x" * 400}], params={"max_tokens": 50, "n": 3})
    assert estimate_tokens(request) == 100 + 1 + 150


# -- 7. LocalSLM answers one choice per call, and says so -------------------------------------------


def test_localslm_answers_n_choices_sampled_together(local_role, monkeypatch):
    """n sequences of the prompt, seeded seed+i: n choices, the prompt counted once, and a cache
    hit that returns the same n (the tiny transformers model; its batcher gathers them)."""
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    first = get_llm()("x", n=3, temperature=1.0, seed=7, max_tokens=4)
    assert [choice.index for choice in first.choices] == [0, 1, 2]
    assert first.text == first.choices[0].message.content
    alone = get_llm()("x", temperature=1.0, seed=7, max_tokens=4)
    assert alone.usage.prompt_tokens == first.usage.prompt_tokens
    assert 3 <= first.usage.completion_tokens <= 3 * 4  # every choice's tokens, each at most the budget
    again = get_llm()("x", n=3, temperature=1.0, seed=7, max_tokens=4)
    assert again.cached and again.choices == first.choices
    greedy = asyncio.run(get_llm().acall("x", n=2, max_tokens=4))
    assert len(greedy.choices) == 2 and greedy.choices[0].message.content == greedy.choices[1].message.content


def test_a_camel_case_credential_header_stays_out_of_the_key_unregistered():
    from myopto.backends.base import headers_key

    marker = "camel-credential-value-0123456789"
    assert marker not in headers_key({"XApiKey": marker, "OcpApimSubscriptionKey": marker, "x-route": "alpha"})
    assert "alpha" in headers_key({"x-route": "alpha"})
