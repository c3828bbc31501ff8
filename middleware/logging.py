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
from myopto.recording import report_unrecorded
from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Response


class Logging(Middleware):
    """Logs every call, hit or miss, success or final error, with run, role, backend, model,
    cache hit, attempts, latency, tokens and cost; messages and answer when asked for.

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
    except Exception as failure:  # the call's outcome is already decided: the log must not change it
        if response is not None:
            report_unrecorded("log", failure, role=request.role, model=request.model, key=request.fingerprint())
        else:
            _log.error(redact(f"a failed call (role {request.role}, model {request.model}) could not be written to "
                              f"the call log {log.path}: {type(failure).__name__}: {failure}"))


def _write_line(log: CallLog, request: Request, response: Response | None, error: Exception | None,
                latency: float) -> None:
    fields: dict[str, Any] = {
        "run": request.metadata.get("run"),
        "tags": request.metadata.get("tags") or None,
        "role": request.role,
        "backend": request.backend,
        "model": request.model,
        "request_key": request.fingerprint()[:16],
        "latency_s": round(latency, 6),
    }
    if response is not None:
        fields.update(
            status="ok",
            cached=response.cached,
            attempts=response.attempts,
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            cost=response.cost,
            finish_reason=response.finish_reason,
        )
    else:
        fields.update(
            status="error",
            cached=False,
            attempts=getattr(error, "attempts", 1),
            error_type=type(error).__name__,
            error=redact(str(error))[:2000],  # masked before it is cut, so no part of a key is left
        )
    if log.messages:
        fields["messages"] = request.messages_list()
        if request.response_format is not None:
            fields["response_format"] = request.response_format_dict()
        if response is not None:
            fields["answer"] = response.text
        elif getattr(error, "response", None) is not None:
            fields["answer"] = getattr(error.response, "text", None)
    log.write(**{key: value for key, value in fields.items() if value is not None or key in ("cost", "run")})
