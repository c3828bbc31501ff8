"""The cache key is made from what reaches the wire and what the model is.

Real servers (two of the project's test servers), the real `openai` and `litellm` clients and a
real disk cache: an endpoint chosen by the environment or by LiteLLM's `extra` keys its own
answers, and spellings that mean the same on the wire share one entry.
"""

import pytest
from testkit import serve

from myopto import Request, clear_role_config, get_llm, set_role_config
from myopto.backends.base import endpoint_url
from myopto.cli import roles_report
from myopto.request import key_of
from myopto.testing import FakeOpenAIServer

QUERY_SECRET = "sk-query-secret-0123456789"


@pytest.fixture
def cache_on(monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE", "on")


@pytest.fixture
def other_server():
    """A second test server, so two endpoints can answer differently."""
    with FakeOpenAIServer() as server:
        yield server


def ask_each_server(server, other_server, monkeypatch):
    """Ask one prompt with OPENAI_BASE_URL on `server`, then on `other_server`: the second answer
    is the other server's own, not the first one's from the cache."""
    server.reply("from A")
    other_server.reply("from B")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    assert get_llm()("which server?").text == "from A"
    monkeypatch.setenv("OPENAI_BASE_URL", other_server.url)
    answer = get_llm()("which server?")
    assert (answer.text, answer.cached, other_server.request_count) == ("from B", False, 1)


def test_customllm_without_base_url_keys_the_openai_base_url_it_sends_to(server, other_server, cache_on, monkeypatch):
    set_role_config("executor", backend="CustomLLM", model="m", api_key="sk-k", retries=0)
    ask_each_server(server, other_server, monkeypatch)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    again = get_llm()("which server?")
    assert (again.text, again.cached, server.request_count) == ("from A", True, 1)  # A's own entry, kept


def test_litellm_without_base_url_keys_the_openai_base_url_it_sends_to(server, other_server, cache_on, monkeypatch):
    set_role_config("executor", backend="LiteLLM", model="openai/gpt-4o-mini", api_key="sk-k", retries=0)
    ask_each_server(server, other_server, monkeypatch)


def test_litellm_api_base_in_extra_is_in_the_key(server, other_server, cache_on):
    server.reply("from A")
    other_server.reply("from B")
    set_role_config(
        "executor",
        backend="LiteLLM",
        model="openai/gpt-4o-mini",
        api_key="sk-k",
        retries=0,
        extra={"api_base": server.url},
    )
    assert get_llm()("which server?").text == "from A"
    set_role_config("executor", extra={"api_base": other_server.url})
    answer = get_llm()("which server?")
    assert (answer.text, answer.cached, other_server.request_count) == ("from B", False, 1)
    assert get_llm().request("which server?").endpoint == other_server.url


def test_litellm_api_version_and_wire_extras_are_in_the_key_and_credentials_and_timeouts_are_not(server, monkeypatch):
    def key(**options):
        clear_role_config("executor")
        set_role_config("executor", backend="LiteLLM", model="azure/my-deployment", base_url=server.url, **options)
        return get_llm().request("x").fingerprint()

    plain = key()
    assert key(api_version="2024-06-01") != plain
    assert key(api_version="2024-10-21") != key(api_version="2024-06-01")
    assert key(extra={"api_version": "2024-06-01"}) == key(api_version="2024-06-01")
    assert key(extra={"custom_llm_provider": "openai"}) != plain
    assert key(extra={"drop_params": True}) != plain
    # how the call is made or authenticated does not change the answer
    assert key(extra={"num_retries": 3, "timeout": 5, "aws_secret_access_key": "s" * 20}) == plain
    # a provider's API version from the environment counts as LiteLLM reads it
    monkeypatch.setenv("AZURE_API_VERSION", "2024-06-01")
    assert key() != plain


def test_a_trailing_slash_on_base_url_hits_the_same_entry(server, cache_on):
    serve(server, retries=0)
    assert not get_llm()("slash?").cached
    set_role_config("executor", base_url=server.url + "/")
    again = get_llm()("slash?")
    assert again.cached and server.request_count == 1
    set_role_config("executor", base_url=server.url.upper().replace("/V1", "/v1"))
    assert get_llm()("slash?").cached  # HTTP://127.0.0.1:PORT/v1: scheme and host are case-blind


def test_equal_numbers_in_params_hit_the_same_entry(server, cache_on):
    serve(server, retries=0)
    assert not get_llm()("zero", temperature=0).cached
    assert get_llm()("zero", temperature=0.0).cached
    assert not get_llm()("one", top_p=1.0, extra_body={"x": [2.0]}).cached
    assert get_llm()("one", top_p=1, extra_body={"x": [2]}).cached
    assert server.request_count == 2


@pytest.mark.parametrize(
    "one, other, same",
    [
        ({"temperature": 0}, {"temperature": 0.0}, True),
        ({"temperature": 0.5}, {"temperature": 0.5}, True),
        ({"temperature": 0.5}, {"temperature": 0.25}, False),
        ({"logprobs": True}, {"logprobs": 1}, False),  # a boolean is not the number 1
        ({"seed": 0}, {"seed": False}, False),
        ({"extra_body": {"a": {"b": 3.0}}}, {"extra_body": {"a": {"b": 3}}}, True),
    ],
)
def test_params_are_keyed_by_value_but_booleans_stay_booleans(one, other, same):
    def key(params):
        return Request(model="m", messages=[{"role": "user", "content": "x"}], params=params).fingerprint()

    assert (key(one) == key(other)) is same


def test_sample_numbers_are_keyed_by_value():
    def request(sample):
        return Request(model="m", messages=[{"role": "user", "content": "x"}], metadata={"sample": sample})

    assert request(1).fingerprint() == request(1.0).fingerprint() != request(2).fingerprint()


def test_fingerprint_is_the_key_of_fingerprint_data():
    request = Request(
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "héllo"}]}],
        params={"temperature": 0.0, "stop": ["x"], "extra_body": {"k": [1.0, 2.5, True]}},
        response_format={"type": "json_object"},
        backend="CustomLLM",
        endpoint="http://h/v1",
        metadata={"sample": {"n": 3.0}, "run": "r"},
    )
    data = request.fingerprint_data()
    assert request.fingerprint() == key_of(data)
    assert data["params"]["temperature"] == 0 and data["sample"] == {"n": 3}


def test_a_key_in_the_base_url_query_is_masked_in_the_key_the_record_and_myopto_roles(server, cache_on, tmp_path):
    # `&p=/` keeps the SDK's appended path at the end of the query, where the test server reads it
    url = f"{server.url}?api-key={QUERY_SECRET}&api-version=1&p=/"
    set_role_config(
        "executor", backend="CustomLLM", model="m", base_url=url, cache_dir=str(tmp_path / "cache"), retries=0
    )
    assert get_llm()("x").text == "echo: x"
    assert QUERY_SECRET in server.last_request.path  # the key did reach the server
    request = get_llm().request("x")
    assert request.endpoint == f"{server.url}?api-key=***&api-version=1&p=/"
    stored = b"".join(path.read_bytes() for path in (tmp_path / "cache").rglob("*") if path.is_file())
    assert b"api-key=***" in stored and QUERY_SECRET.encode() not in stored  # the record, on disk
    report = roles_report(["executor"])
    assert QUERY_SECRET not in report and "api-key=***" in report
    assert QUERY_SECRET not in repr(get_llm().pipeline.backend)
    # another key for the same server reaches the same model: the same entry
    set_role_config("executor", base_url=f"{server.url}?api-key=sk-another-key-987654321&api-version=1&p=/")
    assert get_llm()("x").cached and server.request_count == 1
    # other query parameters are part of where the call goes
    set_role_config("executor", base_url=f"{server.url}?api-key={QUERY_SECRET}&api-version=2&p=/")
    assert get_llm().request("x").fingerprint() != request.fingerprint()


@pytest.mark.parametrize(
    "url, spelled",
    [
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("HTTPS://API.Example.COM:443/v1", "https://api.example.com/v1"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com/", "http://example.com/"),
        ("http://[::1]:8080/v1//", "http://[::1]:8080/v1"),
        ("https://user:pa55word@h/v1", "https://***@h/v1"),
        ("https://h/v1?api-version=2024-06-01&api-key=abc#part", "https://h/v1?api-version=2024-06-01&api-key=***"),
        ("https://h/openai?sig=s1&token=t&code=7", "https://h/openai?sig=***&token=***&code=7"),
    ],
)
def test_endpoint_url_has_one_spelling_per_destination_and_no_credentials(url, spelled):
    assert endpoint_url(url) == spelled
