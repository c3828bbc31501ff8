"""Streaming on CustomLLM and LiteLLM, end to end: the real `openai` and `litellm` clients over
real HTTP to the test server, which streams Server-Sent Events as OpenAI does. A streamed call
yields the chunks the raw SDK's stream yields and adds up to the answer a plain call gives;
closing it closes the server's connection; a stream broken off mid-way raises `StreamBroken`
and is neither retried nor cached; a completed one is cached and replays chunk for chunk."""

import asyncio
import logging

import openai
import pytest
from testkit import HTTP_BACKENDS, serve, use_cache, wait_for

from myopto import get_llm
from myopto.errors import BackendError, ConnectionFailed, StreamBroken
from myopto.streaming import AsyncStream, Stream
from myopto.testing import Answer

BACKENDS = pytest.mark.parametrize("backend", sorted(HTTP_BACKENDS))
PROMPT = "hello there"
LONG = " ".join(f"w{i}" for i in range(60))  # echoed: 62 chunks, time to close one mid-way
THINKING = Answer(
    content="the sum is 3",
    reasoning_content="add one and two",
    tool_calls=[
        {"id": "call_add", "name": "add", "arguments": {"a": 1, "b": 2}},
        {"id": "call_log", "name": "log", "arguments": {"text": "one plus two"}},
    ],
)


def role(server, backend, **options):
    """The executor at the test server through `backend`, with a model the price maps know."""
    options.setdefault("retries", 0)
    serve(server, backend=backend, model=HTTP_BACKENDS[backend], api_key="sk-x", **options)
    return get_llm()


def texts(chunks):
    """Each chunk's choices' content pieces, in order (for SDK chunks and ours alike)."""
    return [[choice.delta.content for choice in chunk.choices] for chunk in chunks]


def raw_stream(server, backend, prompt=PROMPT, **params):
    """The chunks of the raw SDK's stream of the next answer: LiteLLM's for "LiteLLM", else openai's."""
    arguments = dict(
        messages=[{"role": "user", "content": prompt}], stream=True, stream_options={"include_usage": True}, **params
    )
    if backend == "LiteLLM":
        import litellm

        return list(litellm.completion(model=HTTP_BACKENDS[backend], api_base=server.url, api_key="sk-x", **arguments))
    client = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0)
    return list(client.chat.completions.create(model=HTTP_BACKENDS[backend], **arguments))


def same_answer(streamed, plain):
    """The fields a streamed and a plain call of the same server answer share (not id, time, latency)."""
    for name in ("text", "model", "usage", "cost", "finish_reason", "choices", "parsed", "cached"):
        assert getattr(streamed, name) == getattr(plain, name), name


# -- (a) the chunks the raw SDK yields -------------------------------------------------------


@BACKENDS
def test_a_streamed_call_yields_the_chunk_texts_of_the_raw_sdk_stream(server, backend):
    llm = role(server, backend)
    server.reply(THINKING)
    raw = raw_stream(server, backend)
    server.reply(THINKING)
    stream = llm.stream(messages=[{"role": "user", "content": PROMPT}])
    assert isinstance(stream, Stream)
    chunks = list(stream)
    assert texts(chunks) == texts(raw)
    assert [c.choices[0].delta.reasoning_content for c in chunks if c.choices] == [
        getattr(c.choices[0].delta, "reasoning_content", None) for c in raw if c.choices
    ]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert server.last_request.body["stream"] is True
    assert server.last_request.body["stream_options"] == {"include_usage": True}
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id  # one id a stream, the server's


@BACKENDS
async def test_an_async_stream_yields_the_chunk_texts_of_the_raw_sdk_stream(server, backend):
    llm = role(server, backend)
    server.reply(PROMPT)
    raw = raw_stream(server, "CustomLLM")  # the openai SDK's, for LiteLLM too
    server.reply(PROMPT)
    stream = await llm.acall(PROMPT, stream=True)
    assert isinstance(stream, AsyncStream)
    chunks = [chunk async for chunk in stream]
    assert texts(chunks) == texts(raw)
    assert [c.text for c in chunks if c.text] == ["hello ", "there"]
    assert (await stream.get_final_response()).text == PROMPT


def test_stream_true_on_a_call_returns_the_same_stream(server):
    llm = role(server, "CustomLLM")
    stream = llm(PROMPT, stream=True)
    assert isinstance(stream, Stream)
    assert "".join(chunk.text for chunk in stream) == "echo: hello there" == stream.response.text


# -- (b, c, d) the assembled answer is the plain call's ----------------------------------------


@BACKENDS
def test_the_assembled_response_equals_the_plain_answer(server, backend):
    llm = role(server, backend)
    server.cached_tokens = 1
    server.reply("first answer here")
    streamed = llm.stream(PROMPT, temperature=0).response
    server.reply("first answer here")
    plain = llm(PROMPT, temperature=0)
    same_answer(streamed, plain)
    assert streamed.stream and not plain.stream


@BACKENDS
def test_n_choices_stream_interleaved_and_assemble_by_index(server, backend):
    llm = role(server, backend)
    server.reply("first answer here", "second one")
    streamed = llm.stream(PROMPT, n=2).response
    server.reply("first answer here", "second one")
    plain = llm(PROMPT, n=2)
    assert [choice.message.content for choice in streamed.choices] == ["first answer here", "second one"]
    indexes = [chunk.choices[0].index for chunk in streamed.stream if chunk.choices]
    if backend == "LiteLLM":  # LiteLLM's stream drops the other choices' role and finish chunks
        assert indexes[:4] == [0, 0, 1, 0]
        assert [c.finish_reason for c in streamed.choices] == ["stop", None]
        assert streamed.text == plain.text and streamed.usage == plain.usage
    else:
        assert indexes[:4] == [0, 1, 0, 1]
        same_answer(streamed, plain)


@BACKENDS
async def test_tool_call_and_reasoning_deltas_assemble_into_the_plain_answer(server, backend):
    llm = role(server, backend)
    server.reply(THINKING)
    stream = llm.astream(PROMPT)
    chunks = [chunk async for chunk in stream]
    streamed = await stream.get_final_response()
    server.reply(THINKING)
    plain = await llm.acall(PROMPT)
    same_answer(streamed, plain)
    message = streamed.choices[0].message
    assert [call.function.name for call in message.tool_calls] == ["add", "log"]
    assert message.tool_calls[0].id == "call_add" and message.tool_calls[0].function.arguments == '{"a": 1, "b": 2}'
    assert message.reasoning_content == "add one and two" and streamed.finish_reason == "tool_calls"
    openings = [
        call for chunk in chunks for choice in chunk.choices for call in choice.delta.tool_calls or () if call.id
    ]
    assert [(call.index, call.id, call.function.name) for call in openings] == [
        (0, "call_add", "add"),
        (1, "call_log", "log"),
    ]


def logprobs_of(chunks):
    """Each chunk's first choice's logprobs as dicts (SDK chunks and ours alike), where it has them."""
    found = []
    for chunk in chunks:
        for choice in chunk.choices:
            logprobs = choice.logprobs
            if logprobs is not None and logprobs.content:
                found.append(
                    [
                        token.model_dump() if hasattr(token, "model_dump") else token.to_dict()
                        for token in logprobs.content
                    ]
                )
    return found


@BACKENDS
def test_logprobs_stream_with_their_chunks_assemble_and_replay(server, backend, tmp_path):
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend])
    llm = get_llm()
    server.reply("one two three four")
    raw = raw_stream(server, backend, logprobs=True, top_logprobs=2)
    server.reply("one two three four")
    stream = llm.stream(PROMPT, logprobs=True, top_logprobs=2)
    chunks = list(stream)
    ours = logprobs_of(chunks)
    assert ours == [
        [{k: v for k, v in token.items() if k in ("token", "logprob", "bytes", "top_logprobs")} for token in piece]
        for piece in logprobs_of(raw)
    ]
    assert [len(piece) for piece in ours] == [1, 1, 1, 1]  # a word a chunk, as the server sent them
    server.reply("one two three four")
    plain = llm(PROMPT, logprobs=True, top_logprobs=3)  # another request (top 3): not the cached one
    assembled = stream.response.choices[0].logprobs
    assert [t.token for t in assembled.content] == [t.token for t in plain.choices[0].logprobs.content]
    assert [len(t.top_logprobs) for t in assembled.content] == [2, 2, 2, 2]
    again = llm.stream(PROMPT, logprobs=True, top_logprobs=2)  # from the cache, chunk for chunk
    assert logprobs_of(list(again)) == ours and again.response.cached
    assert again.response.choices[0].logprobs == assembled
    replayed = list(llm.stream(PROMPT, logprobs=True, top_logprobs=3))  # a plain answer, streamed from the cache
    assert [t["token"] for piece in logprobs_of(replayed) for t in piece] == [t.token for t in assembled.content]


@BACKENDS
def test_usage_and_cost_come_from_the_last_chunk(server, backend):
    llm = role(server, backend)
    server.cached_tokens = 1
    server.reply(THINKING)
    stream = llm.stream(PROMPT)
    last = list(stream)[-1]
    assert last.choices == () and last.usage == stream.response.usage
    usage = stream.response.usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.reasoning_tokens) == (2, 1, 4)
    server.cached_tokens = 1
    server.reply(THINKING)
    plain = llm(PROMPT)
    assert usage == plain.usage and stream.response.cost == plain.cost and plain.cost > 0


def test_a_server_that_streams_no_usage_is_said_so_litellm_counts_it(server, caplog):
    server.stream_usage = False
    with caplog.at_level(logging.WARNING, logger="myopto.backends"):
        custom = role(server, "CustomLLM").stream(PROMPT).response
    assert custom.usage.total_tokens == 0 and custom.cost is None
    assert "sent no usage in its stream" in caplog.text
    counted = role(server, "LiteLLM").stream(PROMPT).response
    assert counted.usage.completion_tokens > 0 and counted.cost is not None


# -- (e) closing early -----------------------------------------------------------------------


@BACKENDS
def test_break_and_close_mid_stream_close_the_connection_and_cache_nothing(server, backend, tmp_path):
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend])
    llm = get_llm()
    server.stream_pause(0.02)
    with llm.stream(LONG) as stream:
        for number, _chunk in enumerate(stream):
            if number == 2:
                break
    wait_for(lambda: server.closed_streams == 1)
    server.stream_pause(5.0)
    stream = llm.stream(LONG)
    next(stream)
    stream.close()  # at once: not at the next chunk, due in 5 s
    wait_for(lambda: server.closed_streams == 2, seconds=2.5)
    server.stream_pause(0)
    assert not llm(LONG).cached and server.request_count == 3  # nothing was cached


@BACKENDS
def test_a_stream_dropped_after_a_break_closes_the_connection(server, backend, tmp_path):
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend])
    llm = get_llm()
    server.stream_pause(5.0)
    for _chunk in llm.stream(LONG):
        break  # no close(), no with: the stream is dropped here, and that closes it
    wait_for(lambda: server.closed_streams == 1, seconds=2.5)  # at once: not at the next chunk, due in 5 s
    server.stream_pause(0)
    assert not llm(LONG).cached


@BACKENDS
async def test_an_async_stream_closed_mid_way_closes_the_connection(server, backend, tmp_path):
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend])
    llm = get_llm()
    server.stream_pause(0.02)
    async with llm.astream(LONG) as stream:
        async for chunk in stream:
            if chunk.text:
                break
    await asyncio.to_thread(wait_for, lambda: server.closed_streams == 1)
    server.stream_pause(5.0)
    stream = llm.astream(LONG)
    await anext(stream)
    await stream.aclose()  # at once: not at the next chunk, due in 5 s
    await asyncio.to_thread(wait_for, lambda: server.closed_streams == 2, 2.5)
    server.stream_pause(0)
    assert not (await llm.acall(LONG)).cached and server.request_count == 3


# -- (f) failures ----------------------------------------------------------------------------


@BACKENDS
def test_a_stream_broken_mid_way_raises_with_its_text_and_is_not_retried_nor_cached(server, backend, tmp_path):
    cache = {"cache": "on", "cache_dir": str(tmp_path / "cache")}
    llm = role(server, backend, retries=3, retry_backoff=0.001, **cache)
    server.break_stream(after=3)
    stream = llm.stream("one two three four five")
    seen = []
    with pytest.raises(StreamBroken) as broken:
        for chunk in stream:
            seen.append(chunk.text)
    assert broken.value.text == "echo: one " == "".join(seen)
    assert isinstance(broken.value.__cause__, ConnectionFailed) and not broken.value.retryable
    assert server.request_count == 1
    assert not llm("one two three four five").cached and server.request_count == 2


@BACKENDS
async def test_an_async_stream_broken_mid_way_raises_stream_broken(server, backend):
    llm = role(server, backend, retries=3, retry_backoff=0.001)
    server.break_stream(after=2)
    stream = llm.astream("one two three")
    with pytest.raises(StreamBroken) as broken:
        async for _chunk in stream:
            pass
    assert broken.value.text == "echo: " and server.request_count == 1


@BACKENDS
@pytest.mark.parametrize("fault", ["429", "500", "break before the first chunk"])
def test_a_failure_before_the_first_chunk_is_retried(server, backend, fault):
    llm = role(server, backend, retries=2, retry_backoff=0.001)
    if fault == "break before the first chunk":
        server.break_stream(after=0)
    else:
        server.fail(int(fault), retry_after_ms=1)
    stream = llm.stream(PROMPT)
    assert [chunk.text for chunk in stream if chunk.text] == ["echo: ", "hello ", "there"]
    assert server.request_count == 2 and stream.response.attempts == 2


def test_a_failure_before_the_first_chunk_without_retries_is_the_mapped_error(server):
    llm = role(server, "CustomLLM")
    server.fail(400)
    with pytest.raises(BackendError) as failure:
        list(llm.stream(PROMPT))
    assert failure.value.status_code == 400 and not isinstance(failure.value, StreamBroken)


# -- (g) cached streams replay ---------------------------------------------------------------


@BACKENDS
def test_a_completed_stream_is_cached_and_replays_its_chunks_without_the_server(server, backend, tmp_path):
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend])
    llm = get_llm()
    server.reply(THINKING)
    first = llm.stream(PROMPT)
    chunks = [chunk.to_dict() for chunk in first]
    again = llm.stream(PROMPT)
    assert [chunk.to_dict() for chunk in again] == chunks
    assert again.response.cached and server.request_count == 1
    same_answer(again.response, first.response.replace(cached=True))
    plain = llm(PROMPT)  # a plain call shares the answer, chunks and all
    assert [c.to_dict() for c in plain.stream] == chunks and plain.cached


@BACKENDS
async def test_an_async_completed_stream_replays_from_the_cache(server, backend, tmp_path):
    use_cache(server, tmp_path / "cache", backend=backend, model=HTTP_BACKENDS[backend])
    llm = get_llm()
    first = [chunk.text async for chunk in llm.astream(PROMPT)]
    again = await llm.acall(PROMPT, stream=True)
    assert [chunk.text async for chunk in again] == first
    assert (await again.get_final_response()).cached and server.request_count == 1
