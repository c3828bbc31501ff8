"""`FakeOpenAIServer`: a real OpenAI-compatible HTTP server on 127.0.0.1, for tests.

It answers `POST /v1/chat/completions` (and `GET /v1/models`) over real HTTP, so the real
`openai` and `litellm` clients talk to it as to any provider. It records every request, reports
token usage (one token per whitespace-separated word), honours `response_format` (an answer
that satisfies a `json_schema`, an object for `json_object`), and injects faults on demand:
HTTP errors with `Retry-After`, delays, dropped connections, malformed bodies.

It answers as fully as a provider does: `n` choices (each takes the next queued answer),
`logprobs` (one token per word, with `top_logprobs` alternatives) when the request asks,
tool calls, reasoning (`reasoning_content`, counted in `completion_tokens_details.reasoning_tokens`)
and prompt tokens served from a prompt cache (`cached_tokens`, in `prompt_tokens_details`), the
last three arranged with an `Answer`. A request with `"stream": true` is answered with
Server-Sent Events as OpenAI streams (`myopto.testing.sse`): a word a chunk, the usage last when
`stream_options.include_usage` asks; `break_stream` breaks one off mid-way, `stream_pause` spaces
the chunks out, and `closed_streams` counts the streams a client closed before their end. This
module is the HTTP side (routes, recording, the queues of answers and faults); what an answer
holds is `myopto.testing.answers`', what a fault is `myopto.testing.faults`'.

    with FakeOpenAIServer() as server:
        set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url)
        server.fail(429, retry_after=1)       # the next request gets a 429
        server.reply("hello")                 # the one after answers "hello"
        server.reply(Answer(tool_calls=[{"name": "add", "arguments": {"a": 1}}]))
        server.cached_tokens = 3              # from now on, 3 prompt tokens come from its cache
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from myopto.parsing import content_text
from myopto.testing.answers import Answer as Answer  # imported from here by tests
from myopto.testing.answers import Responder, as_answer, chat_completion
from myopto.testing.faults import Chaos, Fault
from myopto.testing.sse import send_stream


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: path, headers (lower-cased names) and JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    time: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body.get("messages", [])
        return messages

    @property
    def last_user_content(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions server on a free 127.0.0.1 port. See the module doc."""

    def __init__(self, responder: Responder | None = None, *, latency: float = 0.0, api_key: str | None = None) -> None:
        self.responder = responder
        self.latency = latency
        self.api_key = api_key
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._replies: collections.deque[Any] = collections.deque()
        self._faults: collections.deque[Fault] = collections.deque()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._chaos: Chaos | None = None
        self.injected_faults = 0
        # prompt tokens each answer reports as served from a prompt cache (capped at the prompt)
        self.cached_tokens = 0
        self.chunk_pause = 0.0  # seconds between the chunks of a streamed answer
        self.closed_streams = 0  # streams the client closed before their end
        self.stream_usage = True  # False: no usage chunk even when asked, as some servers stream

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running; call start()")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to give a client: `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- arranging answers and faults --------------------------------------------------------
    def reply(self, *answers: Any) -> None:
        """Queue answers for the next requests, in order: a string, a dict (JSON-encoded), or an
        `Answer`. A request for `n` choices takes up to `n` of them, one per choice."""
        with self._lock:
            self._replies.extend(answers)

    def fail(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
        message: str = "injected fault",
    ) -> None:
        """The next `times` requests get an HTTP error `status` (with Retry-After headers if given)."""
        self._inject(
            Fault("status", status=status, retry_after=retry_after, retry_after_ms=retry_after_ms, message=message),
            times,
        )

    def delay(self, seconds: float, *, times: int = 1) -> None:
        """The next `times` requests are answered after `seconds`."""
        self._inject(Fault("delay", seconds=seconds), times)

    def drop(self, *, times: int = 1) -> None:
        """The next `times` requests get their connection closed with no answer."""
        self._inject(Fault("drop"), times)

    def malformed(self, *, times: int = 1) -> None:
        """The next `times` requests get a 200 whose body is not valid JSON."""
        self._inject(Fault("malformed"), times)

    def break_stream(self, *, after: int, times: int = 1) -> None:
        """The next `times` requests that stream get `after` chunks, then their connection dropped
        (a request that does not stream has its connection dropped with no answer)."""
        self._inject(Fault("break", after=after), times)

    def stream_pause(self, seconds: float) -> None:
        """From now on, streamed answers wait `seconds` between chunks (time for a client to close one)."""
        self.chunk_pause = seconds

    def chaos(
        self,
        rate: float,
        *,
        faults: tuple[str, ...] = ("429", "500", "503", "drop", "delay"),
        delay: float = 0.5,
        seed: int = 0,
    ) -> None:
        """From now on each request gets a random fault with probability `rate` (0 turns it off).

        Fault names: an HTTP status ("429" comes with `retry-after-ms: 5`), "drop", "malformed",
        "delay" (answers after `delay` seconds: past a client's shorter timeout). Seeded, so a run
        is repeatable; `injected_faults` counts the faults served.
        """
        self._chaos = Chaos(rate, tuple(faults), delay, random.Random(seed)) if rate > 0 else None

    def _inject(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def reset(self) -> None:
        """Forget recorded requests, queued answers and pending faults."""
        with self._lock:
            self._requests.clear()
            self._replies.clear()
            self._faults.clear()
            self._chaos = None
            self.injected_faults = 0
            self.cached_tokens = 0
            self.chunk_pause = 0.0
            self.closed_streams = 0
            self.stream_usage = True

    # -- what happened -----------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError("the server has received no request")
            return self._requests[-1]

    # -- used by the handler -----------------------------------------------------------------
    def _record(self, request: RecordedRequest, choices: int = 1) -> tuple[Fault | None, list[Any]]:
        with self._lock:
            self._requests.append(request)
            if self._faults:
                fault: Fault | None = self._faults.popleft()
            else:
                fault = self._chaos.draw() if self._chaos is not None else None
            if fault is not None:
                self.injected_faults += 1
            replies: list[Any] = []
            while fault is None and self._replies and len(replies) < choices:
                replies.append(self._replies.popleft())
        return fault, replies

    def _completion(self, body: dict[str, Any], replies: list[Any]) -> dict[str, Any]:
        """The chat completion answering `body`: each of its `n` choices takes the next queued reply."""
        count = body.get("n") or 1
        answers = [as_answer(replies[i] if i < len(replies) else None, body, self.responder) for i in range(count)]
        return chat_completion(body, answers, cached_tokens=self.cached_tokens)

    def _stream_closed(self) -> None:
        with self._lock:
            self.closed_streams += 1


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # many clients connecting at once (the default backlog is 5)
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAIServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers
    # Headers and body leave in one write with Nagle off: otherwise the body waits for the
    # client's delayed ACK and every call takes ~40 ms more on loopback.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:  # the client reset its kept-alive connection: it is done with it
            self.close_connection = True

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): fine
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(
                200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "myopto"}]}
            )
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        owner = self.owner
        headers = {name.lower(): value for name, value in self.headers.items()}
        n = body.get("n") if isinstance(body, dict) else None
        fault, replies = owner._record(
            RecordedRequest(self.path, headers, body, time.time()), n if type(n) is int and n > 0 else 1
        )
        if owner.latency:
            time.sleep(owner.latency)
        if owner.api_key is not None and headers.get("authorization") != f"Bearer {owner.api_key}":
            self._send_json(
                401,
                {"error": {"message": "invalid api key", "type": "invalid_request_error", "code": "invalid_api_key"}},
            )
            return
        streaming = body.get("stream") is True
        if fault is not None and self._apply(fault, streaming):
            return
        if not isinstance(body.get("messages"), list) or not body.get("model"):
            self._send_json(
                400, {"error": {"message": "'model' and 'messages' are required", "type": "invalid_request_error"}}
            )
            return
        n = body.get("n", 1)
        if n is not None and (type(n) is not int or n < 1):
            self._send_json(
                400, {"error": {"message": f"n must be a positive integer, got {n!r}", "type": "invalid_request_error"}}
            )
            return
        if not streaming:
            self._send_json(200, owner._completion(body, replies))
            return
        after = fault.after if fault is not None and fault.kind == "break" else None
        usage = owner.stream_usage
        if not send_stream(
            self, owner._completion(body, replies), body, pause=owner.chunk_pause, after=after, usage=usage
        ):
            owner._stream_closed()

    def _apply(self, fault: Fault, streaming: bool = False) -> bool:
        """Carry out a fault; True when the request has been dealt with (a "break" is carried out
        by the stream it breaks)."""
        if fault.kind == "delay":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "break" and streaming:
            return False
        if fault.kind in ("drop", "break"):
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if fault.kind == "malformed":
            data = b'{"id": "chatcmpl-broken", "choices": [{"mess'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            return True
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
        kind = (
            "rate_limit_error"
            if fault.status == 429
            else "server_error"
            if fault.status >= 500
            else "invalid_request_error"
        )
        self._send_json(
            fault.status, {"error": {"message": fault.message, "type": kind, "code": str(fault.status)}}, headers
        )
        return True
