"""`Usage`: records every call's tokens and cost in the usage ledger."""

from __future__ import annotations

from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.request import Request
from myopto.response import Response
from myopto.usage import LEDGER, UsageLedger


class Usage(Middleware):
    """Adds each finished call to a `UsageLedger` (the process-wide one by default), errors included.

    It sits outside the cache, so a cached answer is recorded as a cache hit that cost nothing.
    """

    name = "usage"

    def __init__(self, ledger: UsageLedger | None = None) -> None:
        self.ledger = ledger or LEDGER

    def __call__(self, request: Request, call_next: Handler) -> Response:
        try:
            response = call_next(request)
        except Exception:
            self.ledger.record(request.role, request.model, error=True)
            raise
        self.ledger.record(request.role, request.model, response)
        return response

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            self.ledger.record(request.role, request.model, error=True)
            raise
        self.ledger.record(request.role, request.model, response)
        return response
