"""One chat-completion call as LocalSLM's engines take it and give it back: the request's
`Generation`s (its prompt through the model's chat template, its sampling parameters, its JSON
schema or tools' grammar, one per choice of `n`), and the engines' `Generated` results read back
as a `Response` (a tool call where the tools' grammar decoded one); and `LocalStream`, the
chunks of a streamed call as its sequences decode.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from myopto.chunks import Chunk, ChunkChoice, Delta, FunctionDelta, ToolCallDelta
from myopto.errors import InvalidRequest, StreamBroken, StreamClosed
from myopto.output_format import schema_of
from myopto.request import Request
from myopto.response import Choice, Message, Response, Usage, new_response_id

from .generation import Generated, Generation
from .local_tools import local_messages, tool_plan


def request_generations(
    engine: Any, request: Request, on_text: Callable[[int], Callable[[str], None]] | None = None
) -> list[Generation]:
    """The request's `n` sequences (1 unless `n` says more). With a `seed`, sequence i is
    seeded `seed + i`, so the n answers differ and each is reproducible; greedy decoding
    (temperature 0) gives n identical answers, as servers do. `on_text(i)`: sequence i's
    callback for its text as it decodes (a streamed call)."""
    generation = _generation(engine, request)
    count = request.params.get("n") or 1
    if generation.seed is None and on_text is None:
        return [generation] * count
    return [
        dataclasses.replace(
            generation,
            seed=None if generation.seed is None else generation.seed + index,
            on_text=None if on_text is None else on_text(index),
        )
        for index in range(count)
    ]


def _generation(engine: Any, request: Request) -> Generation:
    params = request.params_dict()
    if params.get("logprobs") or params.get("top_logprobs"):
        raise InvalidRequest(
            "LocalSLM does not return logprobs: leave out logprobs and top_logprobs, or serve the model with "
            "llama-server or vLLM and call it through a CustomLLM role, which returns them"
        )
    tools = tool_plan(params.get("tools"), params.get("tool_choice"))
    response_format = request.response_format_dict()
    constrained = bool(params.get("constrained")) and response_format is not None
    schema = (schema_of(response_format) or {}) if constrained else None
    if tools is not None:  # a call decoded under the tools' grammar (or, with "auto", text)
        constrained, schema = True, tools.schema
    budget = params.get("max_new_tokens") or params.get("max_tokens") or params.get("max_completion_tokens") or 256
    if tools is not None:
        tools.check_fits(engine.text_ids, int(budget))
    return Generation(
        prompt_ids=engine.prompt_ids(local_messages(request.messages_list(), tools)),
        max_new_tokens=int(budget),
        temperature=float(params.get("temperature") or 0.0),
        top_p=params.get("top_p"),
        top_k=params.get("top_k"),
        repetition_penalty=params.get("repetition_penalty"),
        seed=params.get("seed"),
        stop=tuple(params.get("stop") or ()),
        json_schema=schema,
        constrained=constrained,
        free_text=tools is not None and tools.free_text,
    )


def local_response(request: Request, results: Sequence[Generated], start: float) -> Response:
    """One choice per decoded sequence (a tool call when the tools' grammar decoded one); the
    prompt is counted once, as providers count it."""
    params = request.params_dict()
    tools = tool_plan(params.get("tools"), params.get("tool_choice"))
    choices = []
    for index, result in enumerate(results):
        message, finish_reason = (
            tools.read(result.text, index) if tools is not None else (Message(content=result.text), None)
        )
        # a call cut off by its budget (then closed) says so
        if finish_reason is None or result.finish_reason != "stop":
            finish_reason = result.finish_reason
        choices.append(Choice(message=message, index=index, finish_reason=finish_reason))
    first = results[0]
    return Response(
        text=choices[0].message.content or "",
        model=request.model,
        usage=Usage.of(first.prompt_tokens, sum(result.completion_tokens for result in results)),
        cost=0.0,
        latency=time.perf_counter() - start,
        finish_reason=choices[0].finish_reason,
        choices=tuple(choices),
    )


class LocalStream:
    """The chunks of one streamed LocalSLM call, pushed to `request.sink` as its sequences decode.

    Choice i's text goes out as `delta.content` pieces as the engine decodes them (the first
    with `role="assistant"`). A tool call is not streamed as text: an answer under tools that
    begins with `{` (always, for `tool_choice="required"` or a named function) is held, and
    sent whole as one tool-call delta once decoded and checked, as OpenAI's streams carry calls.
    `finish(response)` sends the rest: what the engine held back (a possible stop string's
    beginning, a closer's added tokens), a last chunk per choice with its finish reason, one
    with the usage; and gives the response with its chunks in `Response.stream`. The chunks'
    texts always add up to the response's: when the final text does not extend what was
    streamed (a constrained answer cut off by max_tokens whose closer replaced it with the
    schema's shortest answer), the call fails with `StreamBroken` instead.
    Pushes are serialised: the sequences of one request may push from the engine's thread
    while the caller's thread finishes another.
    """

    def __init__(self, request: Request) -> None:
        self.sink: Any = request.sink
        params = request.params_dict()
        tools = tool_plan(params.get("tools"), params.get("tool_choice"))
        self._tools = tools is not None
        self._free_text = tools is None or tools.free_text
        self.model = request.model
        self.id = new_response_id()
        self.created = int(time.time())
        self.chunks: list[Chunk] = []
        self._lock = threading.Lock()
        self._sent: dict[int, list[str]] = {}  # content pushed, per choice
        self._calls: set[int] = set()  # choices held back as tool calls
        self._started: set[int] = set()  # choices that had a chunk (role sent)

    @property
    def closed(self) -> bool:
        return bool(self.sink.closed)

    def text_of(self, index: int) -> str:
        return "".join(self._sent.get(index, ()))

    def on_text(self, index: int) -> Callable[[str], None]:
        """Sequence `index`'s callback for its decoded text."""
        return lambda piece: self._text(index, piece)

    def _text(self, index: int, piece: str) -> None:
        if not piece or index in self._calls:
            if self.sink.closed:  # a held call: stop decoding it all the same
                raise StreamClosed(text=self.text_of(index))
            return
        if self._tools and index not in self._sent and (not self._free_text or piece.startswith("{")):
            self._calls.add(index)  # a tool call: held, sent whole at the end
            return
        self._push(index, Delta(content=piece))
        self._sent.setdefault(index, []).append(piece)

    def _push(self, index: int | None, delta: Delta, finish_reason: str | None = None, usage: Any = None) -> None:
        with self._lock:
            if index is None:
                choices: tuple[ChunkChoice, ...] = ()
            else:
                if index not in self._started:
                    delta = dataclasses.replace(delta, role="assistant")
                choices = (ChunkChoice(delta=delta, index=index, finish_reason=finish_reason),)
            chunk = Chunk(choices=choices, usage=usage, id=self.id, model=self.model, created=self.created)
            self.sink.push(chunk)  # StreamClosed when the caller stopped reading
            if index is not None:
                self._started.add(index)
            self.chunks.append(chunk)

    def finish(self, response: Response) -> Response:
        """Send the rest of each choice, the finish reasons and the usage; the response with its chunks."""
        for choice in response.choices:
            index, message = choice.index, choice.message
            if message.tool_calls:
                calls = tuple(
                    ToolCallDelta(
                        index=number,
                        id=call.id,
                        type=call.type,
                        function=FunctionDelta(name=call.function.name, arguments=call.function.arguments),
                    )
                    for number, call in enumerate(message.tool_calls)
                )
                self._push(index, Delta(tool_calls=calls))
            else:
                text, sent = message.content or "", self.text_of(index)
                if not text.startswith(sent):
                    raise StreamBroken(
                        "LocalSLM streamed a beginning its final answer does not have: the answer ran out of "
                        "max_tokens and could not be closed into valid JSON, so it became the schema's shortest "
                        "answer; give more max_tokens",
                        text=sent,
                    )
                if len(text) > len(sent):
                    self._push(index, Delta(content=text[len(sent) :]))
                    self._sent.setdefault(index, []).append(text[len(sent) :])
            self._push(index, Delta(), finish_reason=choice.finish_reason)
        self._push(None, Delta(), usage=response.usage)
        return response.replace(id=self.id, created=self.created, stream=tuple(self.chunks))
