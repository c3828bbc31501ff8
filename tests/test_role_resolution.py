"""resolution: `resolve` merges explicit config, the environment it is given and the defaults into a
checked, immutable `ResolvedRole`, as a plain function of its arguments."""

import dataclasses
from pathlib import Path

import pytest

from myopto import ConfigError
from myopto.resolution import resolve
from myopto.role_config import RoleConfig
from myopto.settings import Environment


def environment(**values):
    """An `Environment` with every variable unset except `values`."""
    unset = {field.name: None for field in dataclasses.fields(Environment)}
    return Environment(**{**unset, **values})


def test_model_comes_from_config_then_role_variable_then_backend_default():
    bare = environment(litellm_model="env-default")
    with_role = environment(litellm_model="env-default", role_model="env-role")
    assert resolve("executor", RoleConfig(), environment=bare).model == "env-default"
    from_variable = resolve("executor", RoleConfig(), environment=with_role)
    assert (from_variable.model, from_variable.source["model"]) == ("env-role", "TRACE_LLM_MODEL_EXECUTOR")
    explicit = resolve("executor", RoleConfig.from_options(model="explicit"), environment=with_role)
    assert (explicit.model, explicit.source["model"]) == ("explicit", "config")


def test_backend_comes_from_config_then_default_backend_variable_then_litellm():
    served = environment(default_backend="openai", customllm_model="served", customllm_url="http://127.0.0.1:9/v1")
    from_variable = resolve("critic", RoleConfig(), environment=served)
    assert (from_variable.backend, from_variable.model) == ("CustomLLM", "served")
    assert from_variable.options["base_url"] == "http://127.0.0.1:9/v1"
    assert from_variable.source == {"backend": "TRACE_DEFAULT_LLM_BACKEND", "model": "CustomLLM default"}
    explicit = resolve("critic", RoleConfig.from_options(backend="LiteLLM"), environment=served)
    assert (explicit.backend, explicit.model, explicit.source["backend"]) == ("LiteLLM", "gpt-4o", "config")
    assert resolve("critic", RoleConfig(), environment=environment()).backend == "LiteLLM"


def test_explicit_backend_options_win_over_the_environments_and_overrides_win_over_both():
    env = environment(customllm_url="http://127.0.0.1:9/v1", customllm_api_key="sk-from-environment")
    config = RoleConfig.from_options(backend="CustomLLM", model="m", base_url="http://127.0.0.1:10/v1", temperature=0.1)
    resolved = resolve("executor", config, environment=env)
    assert resolved.options == {"base_url": "http://127.0.0.1:10/v1", "api_key": "sk-from-environment"}
    overridden = resolve("executor", config, RoleConfig.from_options(model="other", temperature=0.7), env)
    assert (overridden.model, overridden.params["temperature"]) == ("other", 0.7)
    assert overridden.options["base_url"] == "http://127.0.0.1:10/v1"


def test_the_cache_location_comes_from_config_then_the_environment_given(tmp_path, monkeypatch):
    monkeypatch.setenv("MYOPTO_CACHE_DIR", str(tmp_path / "from-os-environ"))  # not the Environment given
    given = environment(cache_dir=str(tmp_path / "from-environment"))
    assert Path(resolve("executor", RoleConfig(), environment=given).cache_location) == tmp_path / "from-environment"
    explicit = RoleConfig.from_options(cache_dir=tmp_path / "explicit")
    assert Path(resolve("executor", explicit, environment=given).cache_location) == tmp_path / "explicit"
    shared = resolve("executor", RoleConfig(), environment=environment(cache_url="redis://cache-host:6379/0"))
    assert (shared.cache_location, shared.limits_url) == ("redis://cache-host:6379/0", "redis://cache-host:6379/0")


def test_without_an_environment_resolve_reads_the_variables_of_that_role(monkeypatch):
    monkeypatch.setenv("TRACE_LLM_MODEL_MY_CRITIC", "critic-model")
    assert resolve("my-critic", RoleConfig()).model == "critic-model"
    assert resolve("executor", RoleConfig()).model == "gpt-4o"


@pytest.mark.parametrize(
    "config, env, fragment",
    [
        (RoleConfig(), {"cache_mode": "sometimes"}, "MYOPTO_CACHE must be one of"),
        (RoleConfig(), {"cache_namespace": "team*"}, "MYOPTO_CACHE_NAMESPACE must not contain"),
        (RoleConfig(), {"lease_seconds": "forever"}, "MYOPTO_CACHE_LEASE_SECONDS must be 0.1-3600"),
        (RoleConfig(), {"limits_url": "http://not-redis"}, "MYOPTO_LIMITS_URL"),
        (RoleConfig(), {"default_backend": "NoSuch"}, "unknown backend 'NoSuch'"),
        (RoleConfig(backend="CustomLLM"), {}, "role 'executor' has no model"),
        (
            RoleConfig(backend="CustomLLM", model="m"),
            {"customllm_url": "not a url"},
            "base_url must be an http(s) URL",
        ),
        (RoleConfig.from_options(model="m", device="cuda"), {}, "does not take option(s) ['device']"),
        (RoleConfig.from_options(model="unpriced-model", max_cost_usd=1.0), {}, "price of model 'unpriced-model'"),
    ],
)
def test_a_bad_value_is_refused_with_what_to_fix(config, env, fragment):
    with pytest.raises(ConfigError) as error:
        resolve("executor", config, environment=environment(**env))
    assert fragment in str(error.value)


def test_the_resolved_role_cannot_be_changed_and_does_not_follow_its_inputs():
    options = {"temperature": 0.2, "base_url": "http://127.0.0.1:9/v1"}
    config = RoleConfig.from_options(backend="CustomLLM", model="m", **options)
    resolved = resolve("executor", config, environment=environment())
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.model = "other"
    with pytest.raises(TypeError):
        resolved.params["temperature"] = 1.0
    with pytest.raises(TypeError):
        resolved.options["base_url"] = "http://elsewhere/v1"
    options["temperature"] = 0.9
    assert resolved.params == {"temperature": 0.2}
    assert resolve("executor", config, environment=environment()) == resolved  # same inputs, same answer
