"""Streams through the whole chain, on an in-process backend that streams a word a chunk: the
cache stores a completed stream and replays its chunks, an aborted or failed stream is never
cached, retry stops once a chunk reached the caller, structured output validates at the end,
logs write one record per stream, and a user's middleware for plain calls keeps working."""

import asyncio
import json
import threading
import time

import pytest

from myopto import Pipeline
from myopto.chunks import Assembler, Chunk, replay_chunks
from myopto.errors import SchemaError, StreamBroken, StreamClosed
from myopto.logs import CallLog
from myopto.middleware import Cache, Logging, Retry, StructuredOutput
from myopto.request import Request
from myopto.response import Response
from myopto.stores.disk import disk_store
from myopto.streaming import AsyncStream, Stream
from myopto.testing import EchoBackend

ANSWER = "the quick brown fox jumps"


def ask(text="hello"):
    return Request(model="m", messages=[{"role": "user", "content": text}], backend="Echo")


def chain(tmp_path, backend=None, *more, retries=2):
    backend = backend or EchoBackend(lambda request: ANSWER)
    layers = [Retry(retries=retries, backoff=0.001), *more, Cache(disk_store(tmp_path / "cache"))]
    return backend, Pipeline(backend, layers)


def test_chunks_come_as_the_backend_sends_them_and_add_up_to_the_answer(tmp_path):
    _, pipeline = chain(tmp_path)
    stream = Stream(pipeline, ask())
    chunks = list(stream)
    assert [chunk.text for chunk in chunks if chunk.text] == ["the ", "quick ", "brown ", "fox ", "jumps"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    response = stream.response
    assert response.text == ANSWER and response.finish_reason == "stop" and not response.cached
    assert stream.sink.chunks == len(chunks) and stream.sink.time_to_first_chunk is not None


def test_a_completed_stream_is_cached_and_a_hit_streams_the_same_chunks_at_once(tmp_path):
    backend, pipeline = chain(tmp_path)
    first = [chunk.to_dict() for chunk in Stream(pipeline, ask())]
    again = Stream(pipeline, ask())
    assert [chunk.to_dict() for chunk in again] == first
    assert again.response.cached and again.sink.chunks == 0  # nothing reached the backend
    assert len(backend.requests) == 1
    plain = pipeline(ask())  # a plain call of the same request shares the answer
    assert plain.cached and plain.text == ANSWER and plain.stream == again.response.stream


def test_a_plain_answer_streams_as_one_chunk_a_choice_then_its_usage(tmp_path):
    backend, pipeline = chain(tmp_path)
    plain = pipeline(ask())
    chunks = list(Stream(pipeline, ask()))
    assert [chunk.text for chunk in chunks] == [ANSWER, ""] and chunks[-1].usage == plain.usage
    assert all(chunk.id == plain.id for chunk in chunks) and len(backend.requests) == 1


def test_a_stream_closed_early_is_not_cached_and_stops_the_backend(tmp_path):
    backend, pipeline = chain(tmp_path)
    backend.chunk_pause = 0.05
    stream = Stream(pipeline, ask())
    assert next(stream).text == "the "
    stream.close()
    ended = stream._mailbox.take_within(5)  # the chain's end, at the backend's next chunk
    assert isinstance(ended.error, StreamClosed)
    assert list(Stream(pipeline, ask()))  # asked again: the backend answers again (nothing was cached)
    assert len(backend.requests) == 2


def test_a_failure_before_the_first_chunk_is_retried_after_it_is_not(tmp_path):
    backend, pipeline = chain(tmp_path)
    backend.fail_after = 0  # fails before anything reached the caller: retried, and fails each time
    with pytest.raises(Exception, match="the stream broke"):
        list(Stream(pipeline, ask("a")))
    assert len(backend.requests) == 3
    backend.fail_after = 2
    stream = Stream(pipeline, ask("b"))
    with pytest.raises(StreamBroken) as broken:
        list(stream)
    assert broken.value.text == "the quick " and len(backend.requests) == 4  # not retried
    assert broken.value.__cause__ is not None and "the stream broke" in str(broken.value.__cause__)
    backend.fail_after = None
    assert Stream(pipeline, ask("b")).response.text == ANSWER and len(backend.requests) == 5  # not cached


def test_structured_output_validates_at_the_end_without_a_reask(tmp_path):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    answers = iter(['{"n": 3}', '{"n": "three"}', '{"n": 4}'])
    backend = EchoBackend(lambda request: next(answers))
    _, pipeline = chain(tmp_path, backend, StructuredOutput(reasks=1))
    good = Stream(pipeline, ask("one").replace(response_format=response_format))
    assert "".join(chunk.text for chunk in good) == '{"n": 3}' and good.response.parsed == {"n": 3}
    bad = Stream(pipeline, ask("two").replace(response_format=response_format))
    with pytest.raises(SchemaError) as failed:
        list(bad)
    assert failed.value.response.text == '{"n": "three"}' and len(backend.requests) == 2  # no re-ask


def test_one_log_record_per_stream_with_its_first_chunk_time_and_count(tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    _, pipeline = chain(tmp_path, None, Logging(log))
    list(Stream(pipeline, ask()))
    list(Stream(pipeline, ask()))  # a hit: served at once, no chunk from the backend
    first, hit = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert first["stream"] is True and first["chunks"] == 7 and first["first_chunk_s"] >= 0
    assert hit["cached"] is True and hit["chunks"] == 0 and "first_chunk_s" not in hit


def test_a_middleware_for_plain_calls_sees_the_assembled_answer_and_can_listen_to_chunks(tmp_path):
    seen = {}

    def watcher(request, call_next):
        pieces = []
        if request.sink is not None:
            request.sink.listen(lambda chunk: pieces.append(chunk.text))
        response = call_next(request)
        seen.update(text=response.text, pieces=pieces)
        return response

    _, pipeline = chain(tmp_path, None, watcher)
    list(Stream(pipeline, ask()))
    assert seen["text"] == ANSWER and "".join(seen["pieces"]) == ANSWER


async def test_async_streams_the_same_chunks_and_closing_cancels(tmp_path):
    backend, pipeline = chain(tmp_path)
    stream = AsyncStream(pipeline.acall, ask("async"))
    texts = [chunk.text async for chunk in stream]
    assert "".join(texts) == ANSWER and (await stream.get_final_response()).text == ANSWER
    hit = AsyncStream(pipeline.acall, ask("async"))
    assert [chunk.text async for chunk in hit] == texts and (await hit.get_final_response()).cached
    backend.chunk_pause = 0.05
    early = AsyncStream(pipeline.acall, ask("early"))
    async for _ in early:
        break
    await early.aclose()
    await asyncio.sleep(0)
    assert Stream(pipeline, ask("early")).response.cached is False  # the closed one was not cached


def test_stored_chunks_are_checked_like_the_rest_of_a_record():
    record = Response(text="hi", stream=(Chunk(choices=[{"index": 0, "delta": {"content": "hi"}}]),)).to_dict()
    assert Response.from_dict(record).stream[0].text == "hi"
    for damage in ([{"choices": [{"delta": {"content": 5}}]}], [{"colour": "red"}], {"not": "a list"}):
        with pytest.raises((TypeError, ValueError)):
            Response.from_dict({**record, "stream": damage})
    assert [c.text for c in replay_chunks(Response(text="plain"))] == ["plain", ""]


def test_identical_concurrent_streams_share_one_backend_call_and_each_gets_every_chunk(tmp_path):
    backend, pipeline = chain(tmp_path)
    backend.chunk_pause = 0.02
    streams = [Stream(pipeline, ask("shared")) for _ in range(4)]
    texts = [[chunk.text for chunk in stream] for stream in streams]
    assert len(backend.requests) == 1
    assert all("".join(t) == ANSWER for t in texts)
    assert sum(not stream.response.cached for stream in streams) == 1  # the leader; the others waited


def test_a_followers_stream_is_its_own_when_the_leaders_broke(tmp_path):
    backend, pipeline = chain(tmp_path)
    backend.chunk_pause, backend.fail_after = 0.05, 2
    leader = Stream(pipeline, ask("fragile"))
    assert next(leader).text == "the "
    follower = Stream(pipeline, ask("fragile"))
    backend.fail_after = None  # the follower takes over after the leader's stream broke: it succeeds
    with pytest.raises(StreamBroken):
        list(leader)
    assert follower.response.text == ANSWER


def test_chunk_logprobs_add_up_to_the_choice_logprobs_and_survive_a_record():
    token = {"token": "hi", "logprob": -0.5, "bytes": [104, 105], "top_logprobs": []}
    chunks = [
        Chunk(choices=[{"index": 0, "delta": {"content": "hi"}, "logprobs": {"content": [token]}}]),
        Chunk(
            choices=[{"index": 0, "delta": {"content": " yo"}, "logprobs": {"content": [{**token, "token": " yo"}]}}]
        ),
        Chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    ]
    assembler = Assembler()
    for chunk in chunks:
        assembler.add(Chunk(**{**chunk.to_dict(), "choices": chunk.to_dict()["choices"]}))  # through their stored form
    (choice,) = assembler.choices()
    assert [t.token for t in choice.logprobs.content] == ["hi", " yo"] and choice.logprobs.refusal is None
    with pytest.raises(TypeError):
        Chunk(choices=[{"delta": {"content": "x"}, "logprobs": {"content": [{**token, "logprob": "high"}]}}])
    assert Assembler().choices()[0].logprobs is None  # none asked, none made up


def test_the_first_chunk_for_a_waiting_reader_is_handed_over_before_the_worker_goes_on(monkeypatch):
    from myopto.streaming import _Mailbox

    monkeypatch.setattr(_Mailbox, "HANDOVER_SECONDS", 30.0)
    mailbox = _Mailbox()
    taken: list[str] = []
    reader = threading.Thread(target=lambda: taken.append(mailbox.take().text))
    reader.start()
    while not mailbox._reader_waits:  # the reader waits in take()
        time.sleep(0.001)
    mailbox.deliver(Chunk(choices=[{"delta": {"content": "hi"}}]))
    assert mailbox._items.qsize() == 0  # the worker went on only once the reader had the chunk
    reader.join(5)
    assert taken == ["hi"]
    # a later chunk is left for a waiting reader: the worker goes on at once (not after 30 s)
    mailbox._reader_waits = True  # as if a reader waited but had not woken yet
    worker = threading.Thread(target=mailbox.deliver, args=(Chunk(choices=[{"delta": {"content": "ho"}}]),))
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and mailbox.take().text == "ho"
    # nobody waiting for a stream's first chunk: the worker leaves it and goes on at once
    fresh = _Mailbox()
    worker = threading.Thread(target=fresh.deliver, args=(Chunk(choices=[{"delta": {"content": "yo"}}]),))
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and fresh.take().text == "yo"
