"""LocalSLM with use_mlx=True, on the same tiny model folder, through mlx-lm (CPU backend on Linux)."""

import pytest

from myopto import BackendUnavailable, ConfigError, get_llm, llm_json, set_role_config

mlx_lm = pytest.importorskip("mlx_lm", reason="the mlx extra is not installed")


@pytest.fixture
def mlx_role(tiny_model_path):
    set_role_config("executor", backend="LocalSLM", model=tiny_model_path, use_mlx=True)
    return tiny_model_path


def test_mlx_generates_text_with_usage(mlx_role):
    response = get_llm()("hello", max_tokens=5)
    assert isinstance(response.text, str)
    assert response.usage.prompt_tokens > 0
    assert 1 <= response.usage.completion_tokens <= 5
    assert response.cost == 0.0
    assert "LocalSLM [mlx" in get_llm().pipeline.describe()


def test_mlx_and_transformers_see_the_same_prompt_tokens(mlx_role, tiny_model_path):
    mlx_tokens = get_llm()("same prompt", max_tokens=2).usage.prompt_tokens
    set_role_config("optimizer", backend="LocalSLM", model=tiny_model_path)
    assert get_llm("optimizer")("same prompt", max_tokens=2).usage.prompt_tokens == mlx_tokens


def test_mlx_greedy_is_deterministic(mlx_role):
    assert get_llm()("x y z", max_tokens=6).text == get_llm()("x y z", max_tokens=6).text


def test_mlx_refuses_constrained_decoding_clearly(mlx_role):
    with pytest.raises(ConfigError, match="use_mlx=False"):
        llm_json("x", max_tokens=5, constrained=True)


def test_mlx_refuses_a_gguf_file(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    set_role_config("executor", backend="LocalSLM", model=str(gguf), use_mlx=True)
    with pytest.raises(BackendUnavailable, match="not GGUF"):
        get_llm()("x")
