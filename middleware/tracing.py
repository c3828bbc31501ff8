"""`Tracing`: one OpenTelemetry span per call, in the GenAI semantic conventions' form.

Span `chat {model}`, kind CLIENT, nested under whatever span is current (the caller's own,
Trace's, MLflow's). Attributes: `gen_ai.operation.name`, `gen_ai.provider.name`,
`gen_ai.request.model` and the request parameters (`temperature`, `max_tokens`, `top_p`, `seed`,
`choice.count` when `n` > 1), `gen_ai.response.model` / `id` / `finish_reasons` (one per choice),
`gen_ai.usage.input_tokens` / `output_tokens` / `cache_read.input_tokens` (prompt tokens served
from the provider's prompt cache) / `reasoning.output_tokens`, `server.address` / `server.port`;
on failure `error.type`, an ERROR status and an `exception` event, their message and stack trace
masked as the call log masks them.
Ours under `myopto.*`: role, backend, deployment (of a role with several: the one that answered,
or failed last; each fallback is a `myopto.fallback` event), run and its tags, cached, attempts,
cost_usd, request_key, choices (how many came back) and tool_calls (the names of the functions
called, in every choice: names are not content).
Each retried attempt is an event on the span (`myopto.retry`, from the retry middleware).
Messages and answers (`gen_ai.input.messages`, `gen_ai.output.messages`: one output message per
choice, with its reasoning, text and tool calls with their arguments) only when asked for,
masked as the call log masks them.

Off, and nearly free, until a tracer provider exists (see `myopto.tracing`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from myopto.logs import redact
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Choice, Response
from myopto.tracing import active_tracer, messages_wanted

_PARAMS = {
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "max_new_tokens": "max_tokens",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop_sequences",
}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    return [
        {"type": "text", "content": part.get("text", "")}
        if isinstance(part, dict) and part.get("type") == "text"
        else {"type": str(part.get("type", "unknown")) if isinstance(part, dict) else "unknown"}
        for part in content or []
    ]


def _arguments(text: str) -> Any:
    """A tool call's arguments as the convention records them: the JSON value the model wrote,
    or its text as written when that is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _output_message(choice: Choice) -> dict[str, Any]:
    """One choice as an output message of the GenAI conventions: its reasoning, text and tool
    calls as parts, and its own finish reason."""
    message = choice.message
    parts: list[dict[str, Any]] = []
    if message.reasoning_content:
        parts.append({"type": "reasoning", "content": message.reasoning_content})
    if message.content is not None:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls or ():
        parts.append(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.function.name,
                "arguments": _arguments(call.function.arguments),
            }
        )
    return {"role": message.role, "parts": parts, "finish_reason": choice.finish_reason or "stop"}


def _exception_attributes(error: BaseException, message: str) -> dict[str, str]:
    """The `exception` event's attributes, as the SDK's `record_exception` writes them, but with
    the message and the whole stack trace (causes included) masked: an SDK's exception often
    quotes the request, its URL or the key it was refused."""
    import traceback

    kind = type(error)
    module = kind.__module__
    return {
        "exception.type": f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__,
        "exception.message": message,
        "exception.stacktrace": redact("".join(traceback.format_exception(error))),
        "exception.escaped": "False",
    }


class Tracing(Middleware):
    """One span per call (see the module doc). `provider_name(model)` names the provider
    (`openai`, `anthropic`, a server's host, a local engine), as the backend reports it."""

    name = "tracing"

    def __init__(self, *, provider_name: Callable[[str], str] | None = None) -> None:
        self.provider_name = provider_name or (lambda model: "unknown")
        self._providers: dict[str, str] = {}

    # -- attributes ------------------------------------------------------------------------
    def _provider(self, model: str) -> str:
        provider = self._providers.get(model)
        if provider is None:
            try:
                provider = self.provider_name(model) or "unknown"
            except Exception:  # noqa: BLE001 - naming the provider must never fail a call
                provider = "unknown"
            self._providers[model] = provider
        return provider

    def _start_attributes(self, request: Request) -> dict[str, Any]:
        metadata = request.metadata
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self._provider(request.model),
            "gen_ai.request.model": request.model,
            "myopto.role": request.role,
            "myopto.backend": request.backend,
            "myopto.request_key": request.fingerprint(),
        }
        for name, value in request.params.items():
            key = _PARAMS.get(name)
            if key is not None and value is not None:
                attributes[f"gen_ai.request.{key}"] = list(value) if isinstance(value, (list, tuple)) else value
        if request.endpoint:
            parts = urlsplit(request.endpoint)
            if parts.hostname:
                attributes["server.address"] = parts.hostname
                try:
                    port = parts.port
                except ValueError:  # an endpoint that is not a URL with a numeric port (a local model's)
                    port = None
                attributes["server.port"] = port or (443 if parts.scheme == "https" else 80)
        if metadata.get("run") is not None:
            attributes["myopto.run"] = metadata["run"]
            for tag, value in (metadata.get("tags") or {}).items():
                attributes[f"myopto.run.tags.{tag}"] = (
                    value if isinstance(value, (str, bool, int, float)) else str(value)
                )
        if request.response_format is not None:
            attributes["gen_ai.output.type"] = "json"
        choices = request.params.get("n")
        if type(choices) is int and choices > 1:  # the convention: set only when not 1
            attributes["gen_ai.request.choice.count"] = choices
        if messages_wanted():
            messages = [{"role": m.get("role"), "parts": _parts(m.get("content"))} for m in request.messages_list()]
            attributes["gen_ai.input.messages"] = json.dumps(redact(messages), ensure_ascii=False)
        return attributes

    @staticmethod
    def _finish(span: Any, response: Response, sink: Any = None) -> None:
        usage = response.usage
        choices = response.choices
        attributes: dict[str, Any] = {
            "gen_ai.response.model": response.model,
            "gen_ai.response.id": response.id,
            "gen_ai.response.finish_reasons": [choice.finish_reason or "stop" for choice in choices],
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
            "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
            "myopto.choices": len(choices),
            "myopto.cached": response.cached,
            "myopto.attempts": response.attempts,
        }
        # the functions called are not content (the arguments are): recorded whatever the switch
        names = [call.function.name for choice in choices for call in choice.message.tool_calls or ()]
        if names:
            attributes["myopto.tool_calls"] = names
        if response.cost is not None:
            attributes["myopto.cost_usd"] = response.cost
        if response.deployment is not None:  # which of the role's deployments answered
            attributes["myopto.deployment"] = response.deployment
        if sink is not None:  # a streamed call: one span for the whole stream
            attributes["gen_ai.request.stream"] = True
            attributes["myopto.stream.chunks"] = sink.chunks
            if sink.time_to_first_chunk is not None:  # GenAI's name for the time to the first token
                attributes["gen_ai.server.time_to_first_token"] = sink.time_to_first_chunk
        if messages_wanted():
            answers = [_output_message(choice) for choice in choices]
            attributes["gen_ai.output.messages"] = json.dumps(redact(answers), ensure_ascii=False)
        span.set_attributes(attributes)

    @staticmethod
    def _fail(span: Any, error: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attributes(
            {
                "error.type": type(error).__name__,
                "myopto.cached": False,
                "myopto.attempts": getattr(error, "attempts", 1),
            }
        )
        status_code = getattr(error, "status_code", None)
        if status_code is not None:
            span.set_attribute("http.response.status_code", status_code)
        deployment = getattr(error, "deployment", None)
        if isinstance(deployment, str):  # the deployment that failed last
            span.set_attribute("myopto.deployment", deployment)
        message = redact(str(error))
        span.add_event("exception", _exception_attributes(error, message))
        span.set_status(Status(StatusCode.ERROR, message[:500]))

    def _span(self, tracer: Any, request: Request) -> Any:
        from opentelemetry.trace import SpanKind

        return tracer.start_as_current_span(
            f"chat {request.model}",
            kind=SpanKind.CLIENT,
            attributes=self._start_attributes(request),
            record_exception=False,
            set_status_on_exception=False,
        )

    # -- sync and async --------------------------------------------------------------------
    def __call__(self, request: Request, call_next: Handler) -> Response:
        tracer = active_tracer()
        if tracer is None:
            return call_next(request)
        with self._span(tracer, request) as span:
            try:
                response = call_next(request)
            except Exception as error:
                self._fail(span, error)
                raise
            self._finish(span, response, request.sink)
            return response

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        tracer = active_tracer()
        if tracer is None:
            return await call_next(request)
        with self._span(tracer, request) as span:
            try:
                response = await call_next(request)
            except Exception as error:
                self._fail(span, error)
                raise
            self._finish(span, response, request.sink)
            return response

    def describe(self) -> str:
        return f"{self.name} ({'on' if active_tracer() is not None else 'off: no tracer provider'})"
