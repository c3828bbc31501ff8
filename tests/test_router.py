import threading

import pytest

from myopto import (
    ConfigError,
    InvalidRequest,
    add_middleware,
    clear_role_config,
    get_llm,
    remove_middleware,
    set_role_config,
    set_role_models,
)
from myopto.router import ROUTER, RoleConfig


def resolved(role="executor"):
    return ROUTER.resolve(role)


def test_defaults_are_litellm_and_gpt_4o():
    r = resolved()
    assert (r.backend, r.model) == ("LiteLLM", "gpt-4o")
    assert r.source == {"backend": "default", "model": "LiteLLM default"}


def test_model_resolution_order_config_then_role_variable_then_backend_default(monkeypatch):
    monkeypatch.setenv("TRACE_LITELLM_MODEL", "env-default")
    assert resolved().model == "env-default"
    monkeypatch.setenv("TRACE_LLM_MODEL_EXECUTOR", "env-role")
    assert resolved().model == "env-role"
    assert resolved("optimizer").model == "env-default"
    set_role_models(executor="explicit")
    assert resolved().model == "explicit"


def test_role_variable_names_any_role(monkeypatch):
    monkeypatch.setenv("TRACE_LLM_MODEL_MY_CRITIC", "critic-model")
    assert resolved("my-critic").model == "critic-model"


def test_backend_resolution_order(monkeypatch):
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "CustomLLM")
    monkeypatch.setenv("TRACE_CUSTOMLLM_MODEL", "served-model")
    monkeypatch.setenv("TRACE_CUSTOMLLM_URL", "http://127.0.0.1:9/v1")
    r = resolved()
    assert (r.backend, r.model, r.options["base_url"]) == ("CustomLLM", "served-model", "http://127.0.0.1:9/v1")
    set_role_config("executor", backend="LiteLLM")
    assert resolved().backend == "LiteLLM"
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "LocalSLM")
    assert resolved("optimizer").model == "Qwen/Qwen2-0.5B-Instruct"
    monkeypatch.setenv("TRACE_LOCALSLM_MODEL", "my/local")
    assert resolved("optimizer").model == "my/local"


def test_customllm_key_comes_from_its_variable_then_openai_key(monkeypatch):
    set_role_config("executor", backend="CustomLLM", model="m")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert resolved().options["api_key"] == "sk-openai"
    monkeypatch.setenv("TRACE_CUSTOMLLM_API_KEY", "sk-custom")
    assert resolved().options["api_key"] == "sk-custom"
    set_role_config("executor", api_key="sk-explicit")
    assert resolved().options["api_key"] == "sk-explicit"


def test_set_role_models_key_applies_to_the_roles_named_in_that_call():
    set_role_models(executor="a", optimizer="b", backend="CustomLLM", key="sk-1")
    set_role_models(metaoptimizer="c", backend="CustomLLM")
    assert resolved("executor").options["api_key"] == "sk-1"
    assert resolved("optimizer").options["api_key"] == "sk-1"
    assert "api_key" not in resolved("metaoptimizer").options


def test_set_role_models_takes_any_role_name():
    set_role_models(critic="critic-model")
    assert resolved("critic").model == "critic-model"
    assert "critic" in ROUTER.roles()


def test_set_role_config_merges_with_earlier_config():
    set_role_models(executor="gpt-4o-mini")
    set_role_config("executor", temperature=0.2)
    r = resolved()
    assert r.model == "gpt-4o-mini" and r.params["temperature"] == 0.2


def test_the_api_key_is_not_in_the_repr_of_configs():
    set_role_config("executor", backend="CustomLLM", model="m", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(ROUTER.config("executor"))
    assert "sk-very-secret" not in repr(resolved())
    assert "sk-very-secret" not in repr(get_llm().pipeline.backend)


def test_clear_role_config_one_role_or_all():
    set_role_models(executor="a", optimizer="b")
    clear_role_config("executor")
    assert resolved().model == "gpt-4o" and resolved("optimizer").model == "b"
    clear_role_config()
    assert resolved("optimizer").model == "gpt-4o"


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: set_role_config("executor", backend="NoSuch"), "unknown backend 'NoSuch'"),
        (lambda: set_role_config("executor", backend="CustomLLM"), "has no model"),
        (lambda: set_role_config("executor", device="cuda"), "does not take option(s) ['device']"),
        (lambda: set_role_config("executor", temperature=7), "temperature must be between"),
        (lambda: set_role_config("executor", model=""), "non-empty string"),
        (lambda: set_role_config("", model="m"), "non-empty string"),
        (lambda: set_role_config("executor", structured_output="magic"), "structured_output must be one of"),
        (lambda: set_role_models(backend="LiteLLM"), "name at least one role"),
        (lambda: get_llm("executor", backend="bogus"), "unknown backend"),
    ],
)
def test_bad_config_fails_on_the_spot_with_what_to_fix(call, fragment):
    with pytest.raises(ConfigError) as error:
        call()
    assert fragment in str(error.value)


def test_a_rejected_config_leaves_the_old_one_in_place():
    set_role_models(executor="good")
    with pytest.raises(ConfigError):
        set_role_config("executor", device="cuda")
    with pytest.raises(ConfigError):
        set_role_config("executor", backend="Nope")
    assert resolved().model == "good"


def test_set_role_models_is_all_or_nothing(monkeypatch):
    set_role_models(executor="keep")
    monkeypatch.setenv("TRACE_LLM_MODEL_EXECUTOR", "from-env")
    # the executor's update is valid; the optimizer's (CustomLLM with no model anywhere) is not
    with pytest.raises(ConfigError, match="'optimizer' has no model"):
        ROUTER.configure({"executor": RoleConfig(model="new"), "optimizer": RoleConfig(backend="CustomLLM")})
    assert resolved().model == "keep"


def test_localslm_loads_nothing_until_the_first_call():
    from myopto.backends import local_slm

    set_role_models(executor="Qwen/Qwen2-0.5B-Instruct", backend="LocalSLM")
    llm = get_llm("executor")
    assert (llm.backend, llm.model) == ("LocalSLM", "Qwen/Qwen2-0.5B-Instruct")
    assert local_slm.LOADS["Qwen/Qwen2-0.5B-Instruct"] == 0


def test_unknown_call_parameters_are_rejected_before_the_network(custom_role):
    llm = get_llm()
    with pytest.raises(InvalidRequest, match="unknown parameter"):
        llm("hi", temprature=0)
    with pytest.raises(InvalidRequest, match="max_tokens must be a positive integer"):
        llm("hi", max_tokens=0)
    with pytest.raises(InvalidRequest, match="messages"):
        llm(messages=[{"role": "user", "content": None}])
    assert custom_role.request_count == 0


def test_chain_is_cached_and_rebuilt_when_the_role_config_changes():
    set_role_models(executor="a")
    first = ROUTER.chain("executor")[1]
    assert ROUTER.chain("executor")[1] is first
    set_role_models(optimizer="b")  # another role: executor's chain is still valid but may rebuild
    set_role_config("executor", temperature=0.1)
    rebuilt = ROUTER.chain("executor")[1]
    assert rebuilt is not first
    assert ROUTER.chain("executor")[1] is rebuilt


def test_an_llm_object_follows_later_config_changes(custom_role):
    llm = get_llm()
    assert llm("one").model == "test-model"
    set_role_config("executor", model="another-model")
    assert llm("two").model == "another-model"
    assert custom_role.last_request.body["model"] == "another-model"


def test_get_llm_overrides_apply_to_that_object_only(custom_role):
    special = get_llm("executor", model="special", temperature=0.3)
    plain = get_llm("executor")
    special("x")
    assert custom_role.last_request.body["model"] == "special"
    assert custom_role.last_request.body["temperature"] == 0.3
    plain("x")
    assert custom_role.last_request.body["model"] == "test-model"
    assert "temperature" not in custom_role.last_request.body


def test_router_is_thread_safe_under_concurrent_config_and_calls(custom_role):
    errors = []

    def configure(i):
        try:
            for j in range(20):
                set_role_config(f"role{i}", backend="CustomLLM", model=f"m{i}-{j}", base_url=custom_role.url)
                assert ROUTER.chain(f"role{i}")[0].model == f"m{i}-{j}"
        except Exception as error:  # noqa: BLE001 - any error in a thread is collected and reported below
            errors.append(error)

    def call():
        try:
            for _ in range(10):
                assert get_llm("executor")("x").text == "echo: x"
        except Exception as error:  # noqa: BLE001 - any error in a thread is collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=configure, args=(i,)) for i in range(6)] + [
        threading.Thread(target=call) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert custom_role.request_count == 40


def chain_names(user=(), after_structured_output=()):
    """A role's chain, in the order a request travels, with `user` middleware in the user slot and
    others added right after structured_output."""
    return [
        "logging",
        "tracing",
        "usage",
        *user,
        "structured_output",
        *after_structured_output,
        "cache",
        "retry",
        "limits",
    ]


def test_user_middleware_for_one_role_sees_that_role_only(server):
    seen = []

    def spy(request, call_next):
        seen.append(request.role)
        return call_next(request)

    for role in ("executor", "optimizer"):
        set_role_config(role, backend="CustomLLM", model="m", base_url=server.url)
    set_role_config("optimizer", middleware=[spy])
    get_llm("executor")("a")
    get_llm("optimizer")("b")
    get_llm("optimizer")("c")
    get_llm("executor")("d")
    assert seen == ["optimizer", "optimizer"]
    assert get_llm("optimizer").pipeline.names == chain_names(user=["spy"])


def test_add_middleware_for_all_roles_and_at_named_positions(server):
    order = []

    def outer(request, call_next):
        order.append("outer")
        return call_next(request)

    def inner(request, call_next):
        order.append(f"inner:{request.response_format is None}")
        return call_next(request)

    set_role_models(executor="m", optimizer="m", backend="CustomLLM")
    set_role_config("executor", base_url=server.url)
    set_role_config("optimizer", base_url=server.url)
    add_middleware(outer)
    add_middleware(inner, role="optimizer", after="structured_output")
    assert get_llm("executor").pipeline.names == chain_names(user=["outer"])
    assert get_llm("optimizer").pipeline.names == chain_names(user=["outer"], after_structured_output=["inner"])
    get_llm("optimizer")("x", response_format={"type": "json_object"})
    assert order == ["outer", "inner:False"]
    remove_middleware("inner")
    assert get_llm("optimizer").pipeline.names == chain_names(user=["outer"])
    with pytest.raises(ConfigError):
        remove_middleware("inner")


def test_an_llm_with_overrides_follows_environment_and_config_changes(custom_role, monkeypatch):
    llm = get_llm("executor", temperature=0.2)
    assert llm("a").model == "test-model"
    set_role_config("executor", model="changed-model")
    assert llm("b").model == "changed-model"
    clear_role_config("executor")
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "CustomLLM")
    monkeypatch.setenv("TRACE_CUSTOMLLM_URL", custom_role.url)
    monkeypatch.setenv("TRACE_LLM_MODEL_EXECUTOR", "from-env")
    assert llm("c").model == "from-env"
    assert custom_role.last_request.body["temperature"] == 0.2


@pytest.mark.parametrize("url", ["not a url", "localhost:8000/v1", "ftp://host/v1", "http://"])
def test_a_base_url_that_is_not_an_http_url_is_refused_at_configuration(server, url):
    with pytest.raises(ConfigError, match="base_url must be an http"):
        set_role_config("executor", backend="CustomLLM", model="m", base_url=url)
    assert server.request_count == 0


def test_a_bad_customllm_url_in_the_environment_is_refused_before_anything_is_sent(server, monkeypatch):
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "CustomLLM")
    monkeypatch.setenv("TRACE_CUSTOMLLM_MODEL", "m")
    monkeypatch.setenv("TRACE_CUSTOMLLM_URL", "not a url")
    with pytest.raises(ConfigError, match="TRACE_CUSTOMLLM_URL"):
        get_llm()("hello")
    assert server.request_count == 0


def test_customllm_base_url_comes_from_its_variable_then_openai_base_url_then_the_openai_api(monkeypatch):
    set_role_config("executor", backend="CustomLLM", model="m")
    assert "base_url" not in resolved().options
    assert get_llm().request("x").endpoint == "https://api.openai.com/v1"  # where the SDK would send
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert resolved().options["base_url"] == "http://127.0.0.1:9/v1/"
    assert get_llm().request("x").endpoint == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("TRACE_CUSTOMLLM_URL", "http://127.0.0.1:10/v1")
    assert get_llm().request("x").endpoint == "http://127.0.0.1:10/v1"
    set_role_config("executor", base_url="http://127.0.0.1:11/v1")
    assert get_llm().request("x").endpoint == "http://127.0.0.1:11/v1"


def test_a_bad_openai_base_url_is_refused_before_anything_is_sent(server, monkeypatch):
    set_role_config("executor", backend="CustomLLM", model="m")
    monkeypatch.setenv("OPENAI_BASE_URL", "not a url")
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        get_llm()("hello")
    assert server.request_count == 0
