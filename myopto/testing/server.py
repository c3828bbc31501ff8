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
last three arranged with an `Answer`.

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
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from myopto.parsing import content_text

Responder = Callable[[dict[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected fault: an HTTP error, a delay, a dropped connection or a malformed body."""

    kind: str  # "status" | "delay" | "drop" | "malformed"
    status: int = 500
    retry_after: float | None = None
    retry_after_ms: float | None = None
    seconds: float = 0.0
    message: str = "injected fault"


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: path, headers (lower-cased names) and JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    time: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    @property
    def last_user_content(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""


@dataclasses.dataclass(frozen=True)
class Answer:
    """A whole answer to queue with `reply` (or return from a responder), beyond plain text.

    `tool_calls`: OpenAI-shaped calls (`{"id", "type", "function": {"name", "arguments"}}`) or
    short ones (`{"name": ..., "arguments": {...}}`; the id is made up, dict arguments are
    JSON-encoded). `reasoning_content`: the model's thinking, sent beside the content. `finish_reason`
    defaults to "tool_calls" when there are calls, else "stop". `usage`: counts that replace the
    server's own in the response's usage block (such as `{"prompt_tokens": 1_000_000,
    "prompt_tokens_details": {"cached_tokens": 900_000}}`); with `n`, the first choice's `usage` counts.
    `message_fields`: more fields of the message as sent, as other servers spell them (vLLM's
    `reasoning`, say).
    """

    content: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    message_fields: dict[str, Any] | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [_tool_call(call) for call in self.tool_calls]
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        message.update(self.message_fields or {})
        return message


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call in OpenAI's shape from a full or a short one (see `Answer`)."""
    function = call.get("function", call)
    arguments = function.get("arguments", "")
    return {
        "id": call.get("id") or "call_" + uuid.uuid4().hex[:24],
        "type": call.get("type", "function"),
        "function": {
            "name": function["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


def logprobs_for(text: str, top: int = 0) -> dict[str, Any]:
    """The server's logprobs of `text`: one token per word (a space before all but the first), a
    fixed log probability each, and `top` alternatives per position, most likely first."""
    tokens = [word if index == 0 else " " + word for index, word in enumerate(text.split())]
    content = []
    for index, token in enumerate(tokens):
        logprob = -round(0.125 * (index % 8 + 1), 3)
        alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}]
        alternatives += [
            {"token": f"{token}~{rank}", "logprob": logprob - rank, "bytes": list(f"{token}~{rank}".encode())}
            for rank in range(1, top)
        ]
        content.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode("utf-8")),
                "top_logprobs": alternatives[:top],
            }
        )
    return {"content": content, "refusal": None}


def count_tokens(text: str) -> int:
    """The server's token count: whitespace-separated words (simple and reproducible)."""
    return len(text.split())


def example_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A small value that satisfies `schema` (objects carry all their properties)."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return example_for_schema(target, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return example_for_schema(schema[key][0], root)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: example_for_schema(sub, root) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [example_for_schema(schema.get("items", {"type": "string"}), root) for _ in range(count)]
    if kind == "string":
        return "x" * max(schema.get("minLength", 0), 1) if "minLength" in schema else "example"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return None


def default_answer(body: dict[str, Any]) -> str:
    """What the server says when nothing else was arranged: JSON when JSON was asked, else an echo."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return json.dumps(example_for_schema(response_format["json_schema"]["schema"]))
    last = ""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            last = content_text(message.get("content"))
            break
    if response_format.get("type") == "json_object":
        return json.dumps({"echo": last})
    return f"echo: {last}"


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
        self._chaos: tuple[float, tuple[str, ...], float, Any] | None = None
        self.injected_faults = 0
        # prompt tokens each answer reports as served from a prompt cache (capped at the prompt)
        self.cached_tokens = 0

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
        import random

        self._chaos = (rate, tuple(faults), delay, random.Random(seed)) if rate > 0 else None

    def _chaos_fault(self) -> Fault | None:
        if self._chaos is None:
            return None
        rate, faults, delay, rng = self._chaos
        if rng.random() >= rate:
            return None
        name = rng.choice(faults)
        if name == "delay":
            return Fault("delay", seconds=delay)
        if name in ("drop", "malformed"):
            return Fault(name)
        status = int(name)
        return Fault("status", status=status, retry_after_ms=5 if status == 429 else None)

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
            fault = self._faults.popleft() if self._faults else self._chaos_fault()
            if fault is not None:
                self.injected_faults += 1
            replies = []
            while fault is None and self._replies and len(replies) < choices:
                replies.append(self._replies.popleft())
        return fault, replies

    def _answer(self, body: dict[str, Any], reply: Any) -> Answer:
        if reply is None:
            reply = self.responder(body) if self.responder is not None else default_answer(body)
        if isinstance(reply, Answer):
            return reply
        return Answer(content=reply if isinstance(reply, str) else json.dumps(reply))

    def _completion(self, body: dict[str, Any], replies: list[Any]) -> dict[str, Any]:
        """The chat completion answering `body`: `n` choices, logprobs when asked, and usage
        counting every choice."""
        count = body.get("n") or 1
        answers = [self._answer(body, replies[index] if index < len(replies) else None) for index in range(count)]
        choices, completion_tokens, reasoning_tokens = [], 0, 0
        for index, answer in enumerate(answers):
            message = answer.message()
            text = answer.content or ""
            calls = " ".join(
                f"{call['function']['name']} {call['function']['arguments']}" for call in message.get("tool_calls", ())
            )
            reasoning = count_tokens(answer.reasoning_content or "")
            completion_tokens += count_tokens(text) + count_tokens(calls) + reasoning
            reasoning_tokens += reasoning
            choice: dict[str, Any] = {
                "index": index,
                "message": message,
                "finish_reason": answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop"),
                "logprobs": logprobs_for(text, body.get("top_logprobs") or 0) if body.get("logprobs") else None,
            }
            choices.append(choice)
        prompt_tokens = sum(count_tokens(content_text(m.get("content"))) for m in body["messages"])
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": min(self.cached_tokens, prompt_tokens)}
        if reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        usage.update(answers[0].usage or {})
        if answers[0].usage and "total_tokens" not in answers[0].usage:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": usage,
        }


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
        if fault is not None and self._apply(fault):
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
        self._send_json(200, owner._completion(body, replies))

    def _apply(self, fault: Fault) -> bool:
        """Carry out a fault; True when the request has been dealt with."""
        if fault.kind == "delay":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "drop":
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
