"""How `FakeOpenAIServer` streams: a chat completion cut into the `chat.completion.chunk`s OpenAI
sends for `"stream": true`, written as Server-Sent Events over HTTP/1.1 chunked encoding.

Each choice streams as OpenAI streams it: a first chunk with the role (and empty content when
the answer has content), its reasoning then its content a word a chunk (`"echo: hello there"`
is `"echo: "`, `"hello "`, `"there"`), each tool call as a first piece with its index, id, type
and name and then its arguments a word a piece, and a last chunk with an empty delta and the
finish reason. Asked for logprobs, each content chunk carries those of its words (the server's
tokens). With `n` choices their chunks interleave, one of each in turn. Asked for
(`stream_options: {"include_usage": true}`), every chunk carries `"usage": null` and a last
one, with no choices, the usage of the whole answer: the counts the same answer has unstreamed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import select
import socket
from http.server import BaseHTTPRequestHandler
from typing import Any

_AFTER_SPACE = re.compile(r"(?<=\s)")


def pieces(text: str) -> list[str]:
    """`text` cut into word-sized pieces that join back into it: each word with the space after it."""
    return [piece for piece in _AFTER_SPACE.split(text) if piece]


def _choice_parts(message: dict[str, Any], logprobs: dict[str, Any] | None) -> list[tuple[dict[str, Any], Any]]:
    """The deltas that stream one choice's message, in order, each with the logprobs of the tokens
    it adds (a content piece's words: the server's tokens are words); the finish is the caller's."""
    content = message.get("content")
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "" if content is not None else None}]
    for name in ("reasoning_content", "reasoning"):  # `reasoning` is vLLM's spelling, when arranged
        if isinstance(message.get(name), str):
            deltas += [{name: piece} for piece in pieces(message[name])]
    parts: list[tuple[dict[str, Any], Any]] = [(delta, None) for delta in deltas]
    tokens = list((logprobs or {}).get("content") or ())
    for piece in pieces(content or ""):
        taken, tokens = tokens[: len(piece.split())], tokens[len(piece.split()) :]
        parts.append(({"content": piece}, {"content": taken, "refusal": None} if logprobs else None))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        opening = {"name": function["name"], "arguments": ""}
        parts.append(
            ({"tool_calls": [{"index": index, "id": call["id"], "type": call["type"], "function": opening}]}, None)
        )
        parts += [
            ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
            for piece in pieces(function["arguments"])
        ]
    return parts


def completion_chunks(completion: dict[str, Any], *, include_usage: bool = False) -> list[dict[str, Any]]:
    """The chunks OpenAI streams for `completion` (a chat completion dict); see the module doc."""
    stamp = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    streams = []
    for choice in completion["choices"]:
        index = choice["index"]
        parts = [
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}
            for delta, logprobs in _choice_parts(choice["message"], choice.get("logprobs"))
        ]
        parts.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]})
        streams.append(parts)
    chunks = [
        {**stamp, "choices": [part]} for turn in itertools.zip_longest(*streams) for part in turn if part is not None
    ]
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append({**stamp, "choices": [], "usage": completion["usage"]})
    return chunks


def events(chunks: list[dict[str, Any]]) -> list[bytes]:
    """The Server-Sent Events that carry `chunks`, then `data: [DONE]`."""
    return [b"data: " + json.dumps(chunk).encode("utf-8") + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]


def send_stream(
    handler: BaseHTTPRequestHandler,
    completion: dict[str, Any],
    body: dict[str, Any],
    *,
    pause: float = 0.0,
    after: int | None = None,
    usage: bool = True,
) -> bool:
    """Answer the request `handler` serves (whose JSON body is `body`) with `completion` streamed:
    the events in the body of a chunked response, each flushed on its own, `pause` seconds apart;
    with `after`, only that many, then the connection dropped mid-body; with `usage` False, no
    usage chunk even when asked. False when the client closed the connection before the end (a
    write failed)."""
    options = body.get("stream_options")
    include_usage = usage and isinstance(options, dict) and options.get("include_usage") is True
    sent = events(completion_chunks(completion, include_usage=include_usage))
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    if after is not None:
        handler.close_connection = True
    connection = handler.connection
    try:
        handler.wfile.flush()  # the headers; the body goes straight to the socket, an event a send
        for number, event in enumerate(sent):
            if after is not None and number >= after:
                with contextlib.suppress(OSError):  # already gone
                    connection.shutdown(socket.SHUT_RDWR)
                return True
            if number and pause and _closed_within(connection, pause):
                raise ConnectionResetError
            # the last event leaves with the body's end, so the client reads both at once and can
            # keep the connection (a client that stops at `[DONE]` otherwise closes it)
            end = b"0\r\n\r\n" if number == len(sent) - 1 else b""
            connection.sendall(b"%x\r\n%s\r\n%s" % (len(event), event, end))
    except ConnectionError:  # a write failed, or the client closed during a pause: it stopped reading
        handler.close_connection = True
        return False
    return True


def _closed_within(connection: socket.socket, seconds: float) -> bool:
    """Wait `seconds`, or less when the client closes the connection meanwhile: True if it did."""
    readable, _, _ = select.select([connection], [], [], seconds)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except ConnectionError:
        return True
