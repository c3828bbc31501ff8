"""DSPy's async calls (`acall`, `dspy.asyncify`) and `dspy.streamify` on a myopto role: the async
engine and both engines' streams, against the test server through CustomLLM and LiteLLM."""

from __future__ import annotations

import asyncio

import pytest

dspy = pytest.importorskip("dspy")

from dspy.streaming import StreamListener, StreamResponse  # noqa: E402
from dspy_kit import answering, arithmetic, chat_text, serve_role  # noqa: E402
from testkit import HTTP_BACKENDS  # noqa: E402

from myopto import get_usage_summary  # noqa: E402
from myopto.integrations.dspy import lm  # noqa: E402
from myopto.testing.answers import count_tokens  # noqa: E402


@pytest.fixture(params=list(HTTP_BACKENDS))
def backend(request, server):
    serve_role(server, request.param, HTTP_BACKENDS[request.param])
    server.responder = answering(arithmetic)
    return request.param


async def test_acall_runs_concurrent_calls_on_the_async_engine(backend, server):
    program = dspy.ChainOfThought("question -> answer")
    with dspy.context(lm=lm("executor")):
        predictions = await asyncio.gather(*(program.acall(question=f"What is {i} plus 1?") for i in range(3)))
    assert [p.answer for p in predictions] == ["1", "2", "3"]
    assert server.request_count == 3
    assert get_usage_summary()["by_role"]["executor"]["calls"] == 3


async def test_n_candidates_on_the_async_engine_are_one_request(custom_role):
    custom_role.reply(chat_text({"answer": "one"}), chat_text({"answer": "two"}))
    with dspy.context(lm=lm("executor")):
        prediction = await dspy.Predict("question -> answer").acall(question="Count.", config={"n": 2})
    assert prediction.completions.answer == ["one", "two"] and custom_role.request_count == 1


async def test_asyncify_runs_a_program_on_a_worker_thread(custom_role):
    custom_role.responder = answering(arithmetic)
    program = dspy.asyncify(dspy.Predict("question -> answer"))
    with dspy.context(lm=lm("executor")):
        prediction = await program(question="What is 20 plus 22?")
    assert prediction.answer == "42"


async def collect(stream) -> tuple[list[str], object]:
    """The answer field's streamed pieces and the final prediction."""
    pieces, final = [], None
    async for value in stream:
        if isinstance(value, StreamResponse):
            assert value.signature_field_name == "answer"
            pieces.append(value.chunk)
        elif isinstance(value, dspy.Prediction):
            final = value
    return pieces, final


@pytest.mark.parametrize("is_async", [False, True], ids=["sync-program", "async-program"])
async def test_streamify_streams_the_answer_as_the_role_streams_it(backend, server, is_async):
    answer = "forty two is the sum of twenty and twenty two"
    server.responder = None
    server.reply(chat_text({"reasoning": "I add them.", "answer": answer}))
    program = dspy.streamify(
        dspy.ChainOfThought("question -> answer"),
        stream_listeners=[StreamListener(signature_field_name="answer")],
        is_async_program=is_async,
    )
    with dspy.context(lm=lm("executor")):
        pieces, final = await collect(program(question="What is 20 plus 22?"))
    assert final.answer == answer and final.reasoning == "I add them."
    assert len(pieces) > 3 and "".join(pieces).strip() == answer  # word by word, as the server sent them
    assert server.last_request.body["stream"] is True


async def test_a_streamed_rerun_streams_again_from_myopto_cache(server, tmp_path):
    serve_role(server, "CustomLLM", "gpt-4o-mini", cache="on", cache_dir=str(tmp_path))
    server.reply(chat_text({"answer": "one two three four five"}))
    runs = []
    for _ in range(2):  # a listener listens to one run: each run gets its own
        listener = StreamListener(signature_field_name="answer")
        program = dspy.streamify(dspy.Predict("question -> answer"), stream_listeners=[listener])
        with dspy.context(lm=lm("executor")):
            runs.append(await collect(program(question="Count to five.")))
    assert runs[0] == runs[1] and len(runs[0][0]) > 3  # the same pieces, the second time from the cache
    assert server.request_count == 1
    summary = get_usage_summary()["by_role"]["executor"]
    assert (summary["calls"], summary["cache_hits"]) == (2, 1)


async def test_streamed_candidates_beyond_the_first_come_from_the_same_request(custom_role):
    custom_role.reply(chat_text({"answer": "one"}), chat_text({"answer": "two"}))
    program = dspy.streamify(dspy.Predict("question -> answer"))
    with dspy.context(lm=lm("executor")):
        _, final = await collect(program(question="Count.", config={"n": 2}))
    assert final.completions.answer == ["one", "two"] and custom_role.request_count == 1


async def test_a_streamed_call_keeps_its_logprobs(custom_role):
    answer = chat_text({"answer": "Paris"})
    custom_role.reply(answer)
    program = dspy.streamify(dspy.Predict("question -> answer"))
    with dspy.context(lm=lm("executor")):
        _, final = await collect(program(question="Capital of France?", config={"logprobs": True}))
    tokens = [entry["token"] for entry in final.logprobs["content"]]
    assert "".join(tokens) == " ".join(answer.split()) and len(tokens) == count_tokens(answer)  # a word a token
    sent = custom_role.last_request.body
    assert sent["stream"] is True and sent["logprobs"] is True
