"""`Logging`: one structured JSON line per call, written where `configure_logging` or
`MYOPTO_LOG_FILE` says (nothing when neither is set).

A log file that cannot be opened is refused before the call goes on (`ConfigError`, from
`myopto.logs`). A line that cannot be written after the call (a full disk, a folder made
read-only mid-run) never changes the call's outcome: an answer still reaches its caller and the
failure is reported as unrecorded (`myopto.recording`); a failed call still raises its own error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from myopto.errors import ConfigError
from myopto.logs import CallLog, active_log, redact
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.recording import report_unrecorded
from myopto.request import Request
from myopto.response import Response, ToolCall


class Logging(Middleware):
    """Logs every call, hit or miss, success or final error, with run, role, backend, model,
    cache hit, attempts, latency, tokens (cached and reasoning tokens too) and cost, the number of
    choices (and each one's finish reason when there are several) and the names of the tools
    called; messages, answers and tool arguments when asked for.

    Outermost in the chain, so it sees what the caller saw. `log` fixes the destination;
    by default it is looked up on each call (so `configure_logging` takes effect at once).
    """

    name = "logging"

    def __init__(self, log: CallLog | None = None) -> None:
        self.log = log

    def _target(self) -> CallLog | None:
        return self.log if self.log is not None else active_log()

    def __call__(self, request: Request, call_next: Handler) -> Response:
        log = self._target()
        if log is None:
            return call_next(request)
        start = time.perf_counter()
        try:
            response = call_next(request)
        except Exception as error:
            _write(log, request, None, error, time.perf_counter() - start)
            raise
        _write(log, request, response, None, time.perf_counter() - start)
        return response

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        log = self._target()
        if log is None:
            return await call_next(request)
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as error:
            _write(log, request, None, error, time.perf_counter() - start)
            raise
        _write(log, request, response, None, time.perf_counter() - start)
        return response

    def describe(self) -> str:
        try:
            log = self._target()
        except ConfigError as error:
            return f"{self.name} (refused: {error})"
        return f"{self.name} ({log.path})" if log is not None else f"{self.name} (off: no MYOPTO_LOG_FILE)"


_log = logging.getLogger("myopto")


def _write(log: CallLog, request: Request, response: Response | None, error: Exception | None, latency: float) -> None:
    """Write the call's line; a line that cannot be written is reported, never raised."""
    try:
        _write_line(log, request, response, error, latency)
    except Exception as failure:  # noqa: BLE001 - the call's outcome is already decided: the log must not change it
        if response is not None:
            report_unrecorded("log", failure, role=request.role, model=request.model, key=request.fingerprint())
        else:
            _log.error(
                redact(
                    f"a failed call (role {request.role}, model {request.model}) could not be written to "
                    f"the call log {log.path}: {type(failure).__name__}: {failure}"
                )
            )


def _write_line(
    log: CallLog, request: Request, response: Response | None, error: Exception | None, latency: float
) -> None:
    fields: dict[str, Any] = {
        "run": request.metadata.get("run"),
        "tags": request.metadata.get("tags") or None,
        "role": request.role,
        "backend": request.backend,
        "model": request.model,
        "request_key": request.fingerprint()[:16],
        "latency_s": round(latency, 6),
    }
    sink = request.sink
    if sink is not None:  # a streamed call: when its first chunk came, and how many (0: served at once)
        first = sink.time_to_first_chunk
        fields.update(stream=True, chunks=sink.chunks, first_chunk_s=None if first is None else round(first, 6))
    if response is not None:
        fields.update(_answer_fields(response))
        fields["deployment"] = response.deployment  # which of a role's deployments answered (None: one model)
    else:
        fields.update(
            status="error",
            cached=False,
            attempts=getattr(error, "attempts", 1),
            error_type=type(error).__name__,
            error=redact(str(error))[:2000],  # masked before it is cut, so no part of a key is left
            deployment=getattr(error, "deployment", None),  # the deployment that failed last
        )
    if log.messages:
        fields["messages"] = request.messages_list()
        if request.response_format is not None:
            fields["response_format"] = request.response_format_dict()
        if response is not None:
            fields["answer"] = response.text
            if len(response.choices) > 1:
                fields["answers"] = [choice.message.content for choice in response.choices]
            calls = _tool_calls(response)
            if calls:  # as the model wrote them, with the choice each belongs to
                fields["tool_arguments"] = [
                    {"choice": index, "id": call.id, "name": call.function.name, "arguments": call.function.arguments}
                    for index, call in calls
                ]
        elif (failed := getattr(error, "response", None)) is not None:
            fields["answer"] = getattr(failed, "text", None)
    log.write(**{key: value for key, value in fields.items() if value is not None or key in ("cost", "run")})


def _tool_calls(response: Response) -> list[tuple[int, ToolCall]]:
    """Every tool call of every choice, with its choice's index."""
    return [(choice.index, call) for choice in response.choices for call in choice.message.tool_calls or ()]


def _answer_fields(response: Response) -> dict[str, Any]:
    """What a line says of an answer, message text aside: status, tokens by class, cost, how many
    choices and why each ended, and the names of the functions called (names are not content)."""
    usage = response.usage
    fields: dict[str, Any] = {
        "status": "ok",
        "cached": response.cached,
        "attempts": response.attempts,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost": response.cost,
        "finish_reason": response.finish_reason,
        "choices": len(response.choices),
    }
    if len(response.choices) > 1:
        fields["finish_reasons"] = [choice.finish_reason for choice in response.choices]
    names = [call.function.name for _, call in _tool_calls(response)]
    if names:
        fields["tool_calls"] = names
    return fields
