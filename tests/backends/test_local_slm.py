"""LocalSLM on a real (tiny, random-weight) transformers model built by the suite offline."""

import asyncio
import threading

import pytest

from myopto import (
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    StructuredOutputError,
    add_middleware,
    get_llm,
    get_usage_summary,
    llm_json,
    set_role_config,
    set_role_models,
)
from myopto.backends import local_slm
from myopto.output_format import validation_error

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "population", "tags"],
}


def engine(model):
    return local_slm.engine_for(
        model, use_mlx=False, device=None, torch_dtype=None, trust_remote_code=False, max_batch_size=8, batch_wait=0.01
    )


def test_text_generation_through_a_role_reports_usage_and_zero_cost(local_role):
    response = get_llm()("hello", max_tokens=6)
    expected_prompt = len(engine(local_role).prompt_ids([{"role": "user", "content": "hello"}]))
    assert response.usage.prompt_tokens == expected_prompt
    assert 1 <= response.usage.completion_tokens <= 6
    assert response.cost == 0.0
    assert response.finish_reason in ("stop", "length")
    row = get_usage_summary()["by_role"]["executor"]
    assert row["calls"] == 1 and row["unknown_cost_calls"] == 0


def test_greedy_is_deterministic_and_max_tokens_is_honoured(local_role):
    first = get_llm()("same prompt", max_tokens=5)
    second = get_llm()("same prompt", max_tokens=5)
    assert first.text == second.text
    assert first.usage.completion_tokens <= 5


def test_json_is_asked_by_prompt_injection_without_response_format(local_role):
    seen = []

    def spy(request, call_next):
        seen.append(request)
        return call_next(request)

    add_middleware(spy, role="executor", after="structured_output")
    with pytest.raises(StructuredOutputError):  # random weights and 3 tokens: not JSON
        get_llm()("Where?", response_format=SCHEMA, max_tokens=3)
    assert len(seen) == 2  # the answer and one re-ask
    assert seen[1].messages[-1]["content"].startswith("Your answer is not valid")
    sent = seen[0]
    assert sent.response_format is None
    assert "JSON schema" in sent.messages[-1]["content"]


def test_constrained_json_is_schema_valid_every_time_even_when_truncated(local_role):
    needed = len(engine(local_role).text_ids('{"city":"","population":0,"tags":[]}'))
    with pytest.raises(InvalidRequest, match=f"takes {needed} tokens"):  # no closed answer fits: refused
        llm_json("Describe a city.", SCHEMA, max_tokens=needed - 1, constrained=True)
    for budget in range(needed, needed + 40, 2):  # 20 calls; most budgets cut the answer off
        value = llm_json("Describe a city.", SCHEMA, max_tokens=budget, constrained=True)
        assert validation_error(value, SCHEMA) is None, value


def test_constrained_as_a_role_default_and_for_json_object(local_role):
    set_role_config("executor", constrained=True)
    for budget in (3, 8, 30):
        assert isinstance(llm_json("anything", max_tokens=budget), dict)


def test_a_second_role_on_the_same_model_does_not_load_it_again(local_role):
    set_role_config("optimizer", backend="LocalSLM", model=local_role)
    get_llm("executor")("a", max_tokens=2)
    loads = local_slm.LOADS[local_role]  # 1, or more when another engine (MLX) loaded it earlier
    get_llm("optimizer")("b", max_tokens=2)
    assert local_slm.LOADS[local_role] == loads >= 1


def test_concurrent_requests_are_batched_and_match_sequential_greedy_outputs(local_role):
    prompts = [f"question number {i} " * (1 + i % 3) for i in range(8)]
    sequential = [get_llm()(p, max_tokens=10).text for p in prompts]
    batcher = engine(local_role).batcher
    before = len(batcher.batch_sizes)
    results = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def call(i):
        barrier.wait()
        results[i] = get_llm()(prompts[i], max_tokens=10).text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == sequential
    assert max(batcher.batch_sizes[before:]) > 1


async def test_async_calls_are_batched_too(local_role):
    prompts = [f"async {i}" for i in range(6)]
    sequential = [get_llm()(p, max_tokens=6).text for p in prompts]
    responses = await asyncio.gather(*(get_llm().acall(p, max_tokens=6) for p in prompts))
    assert [r.text for r in responses] == sequential


def test_different_budgets_in_one_batch_each_get_their_own(local_role):
    budgets = [2, 9, 5, 12]
    results = {}

    def call(budget):
        results[budget] = get_llm()("budget test", max_tokens=budget)

    threads = [threading.Thread(target=call, args=(b,)) for b in budgets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for budget in budgets:
        assert results[budget].usage.completion_tokens <= budget
        assert results[budget].text == get_llm()("budget test", max_tokens=budget).text


def test_seeded_sampling_is_reproducible(local_role):
    one = get_llm()("sample", max_tokens=8, temperature=1.0, seed=7).text
    two = get_llm()("sample", max_tokens=8, temperature=1.0, seed=7).text
    assert one == two


def test_stop_strings_cut_the_answer(local_role):
    full = get_llm()("stop test", max_tokens=12).text
    if len(full) > 2:
        stop = full[1:3]
        assert get_llm()("stop test", max_tokens=12, stop=[stop]).text == full[: full.find(stop)]


def test_a_model_without_chat_template_gets_a_plain_prompt(tmp_path):
    from myopto.testing.tiny_model import tiny_model

    path = str(tiny_model(tmp_path / "plain", chat_template=False))
    set_role_config("executor", backend="LocalSLM", model=path)
    ids = engine(path).prompt_ids([{"role": "user", "content": "hi"}])
    assert engine(path).tokenizer.decode(ids) == "User: hi\n\nAssistant:"
    assert get_llm()("hi", max_tokens=3).usage.completion_tokens <= 3


def test_a_missing_local_path_is_a_clear_error(tmp_path):
    set_role_config("executor", backend="LocalSLM", model=str(tmp_path / "nope"))
    with pytest.raises(BackendUnavailable, match="that path does not exist"):
        get_llm()("x")


def test_a_hub_id_that_is_not_cached_says_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import, so patched
    set_role_models(executor="nobody/not-a-real-model-xyz", backend="LocalSLM")
    with pytest.raises(BackendUnavailable, match="not in the local Hugging Face cache"):
        get_llm()("x")


def test_unknown_local_options_are_rejected(tiny_model_path):
    with pytest.raises(ConfigError, match="does not take option"):
        set_role_config("executor", backend="LocalSLM", model=tiny_model_path, base_url="http://x")


def test_constrained_must_be_a_bool(local_role):
    with pytest.raises(ValueError, match="constrained must be True or False"):
        get_llm()("x", constrained="yes")


@pytest.fixture
def fresh_probe(monkeypatch):
    from myopto.backends import model_files

    monkeypatch.setattr(model_files, "_probe", None)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return model_files


@pytest.mark.parametrize(
    "setting",
    [("HF_ENDPOINT", "http://127.0.0.1:9"), ("HF_HUB_OFFLINE", "1")],
    ids=["hub-unreachable", "hf-hub-offline"],
)
def test_an_uncached_hub_id_offline_fails_in_seconds_naming_the_alternatives(fresh_probe, monkeypatch, capfd, setting):
    import time

    from myopto import BackendUnavailable

    monkeypatch.setenv(*setting)
    set_role_config("executor", backend="LocalSLM", model="someone/not-in-the-cache-model")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as error:
        get_llm()("hi")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "cannot be reached" in message and ".gguf" in message and "HuggingFaceTB/SmolLM2-135M-Instruct" in message
    assert ("HF_HUB_OFFLINE is set" in message) == (setting[0] == "HF_HUB_OFFLINE")
    assert "Retrying" not in capfd.readouterr().err


def test_a_hub_that_answers_counts_as_reachable_and_the_answer_is_remembered(fresh_probe, monkeypatch, server):
    monkeypatch.setenv("HF_ENDPOINT", server.url.rsplit("/v1", 1)[0])  # any HTTP answer, even a 404
    assert fresh_probe.hub_unreachable() is None
    assert fresh_probe._probe is not None and fresh_probe._probe[2] is None
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert "did not answer" in fresh_probe.hub_unreachable()


def _staggered(batcher, count, gap):
    """Submit `count` items to `batcher` from threads of their own, `gap` seconds apart; their results."""
    import concurrent.futures
    import time

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = []
        for item in range(count):
            futures.append(pool.submit(batcher.submit, item))
            time.sleep(gap)
        return [future.result(timeout=60) for future in futures]


def test_a_burst_whose_callers_arrive_apart_is_gathered_into_one_batch():
    """Eight callers 0.1 s apart, a wait of 0.5 s: the burst spans longer than one wait after its
    first caller, yet each arrives within the wait of the one before, so it stays one batch."""
    from myopto.backends.batcher import Batcher

    batcher = Batcher(lambda items: [item * 10 for item in items], max_batch_size=8, max_wait=0.5)
    assert _staggered(batcher, 8, 0.1) == [item * 10 for item in range(8)]
    assert batcher.batch_sizes == [8]


def test_gathering_stops_at_max_gather_after_the_first_caller():
    from myopto.backends.batcher import Batcher

    batcher = Batcher(lambda items: list(items), max_batch_size=8, max_wait=0.5, max_gather=0.15)
    assert _staggered(batcher, 6, 0.1) == list(range(6))  # a trickle that never pauses for 0.5 s
    assert len(batcher.batch_sizes) > 1 and sum(batcher.batch_sizes) == 6


def test_a_lone_request_waits_for_company_no_longer_than_max_wait():
    from myopto.backends.batcher import Batcher

    batcher = Batcher(lambda items: list(items), max_batch_size=8, max_wait=0.2)
    assert batcher.max_gather == pytest.approx(1.0)  # five waits by default
    assert _staggered(batcher, 2, 0.6) == [0, 1]  # the second came after the first's wait ran out
    assert batcher.batch_sizes == [1, 1]
