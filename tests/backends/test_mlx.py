"""LocalSLM with use_mlx=True, on the same tiny model folder, through mlx-lm (CPU backend on Linux)."""

import pytest

from myopto import BackendUnavailable, get_llm, llm_json, set_role_config

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


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "tags"],
}


def shortest_person_tokens(model):
    from myopto.backends import local_slm
    from myopto.backends.json_grammar import shortest_json

    return len(local_slm.engine_for(model, use_mlx=True).text_ids(shortest_json(PERSON)))


def test_mlx_constrained_answers_are_valid_json_for_the_schema_20_of_20(mlx_role):
    import json

    import jsonschema

    budget = shortest_person_tokens(mlx_role) + 4  # room for the shortest answer, and little more
    for seed in range(20):  # random weights, sampled: only the grammar makes these valid
        response = get_llm()(
            f"person {seed}",
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
            constrained=True,
            max_tokens=budget,
            temperature=0.9,
            seed=seed,
        )
        jsonschema.validate(json.loads(response.text), PERSON)
        assert response.parsed == json.loads(response.text)


def test_mlx_constrained_answer_cut_by_a_tight_budget_is_still_closed_and_a_smaller_one_refused(mlx_role):
    import json

    from myopto import InvalidRequest

    needed = shortest_person_tokens(mlx_role)
    schema = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    with pytest.raises(InvalidRequest, match=f"takes {needed} tokens"):
        get_llm()("x", response_format=schema, constrained=True, max_tokens=needed - 1)
    response = get_llm()("x", response_format=schema, constrained=True, max_tokens=needed)
    value = json.loads(response.text)
    assert set(value) == {"name", "age", "tags"}


def test_mlx_constrained_json_object_without_a_schema(mlx_role):
    value = llm_json("x", max_tokens=6, constrained=True)
    assert isinstance(value, dict)


def test_mlx_refuses_a_gguf_file(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    set_role_config("executor", backend="LocalSLM", model=str(gguf), use_mlx=True)
    with pytest.raises(BackendUnavailable, match="not GGUF"):
        get_llm()("x")
