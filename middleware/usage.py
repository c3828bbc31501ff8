"""`Usage`: records every call's tokens and cost in the usage ledger."""

from __future__ import annotations

from collections.abc import Mapping

from myopto.pipeline import AsyncHandler, Handler, Middleware
from myopto.pricing import check_pricing, cost_from_pricing
from myopto.request import Request
from myopto.response import Response
from myopto.usage import LEDGER, UsageLedger


class Usage(Middleware):
    """Adds each finished call to a `UsageLedger` (the process-wide one by default), errors included.

    It sits outside the cache, so a cached answer is recorded as a cache hit that cost nothing;
    so is an answer shared with an identical call in flight (single flight): only the caller whose
    request was sent pays, and the ledger agrees with what the provider and the budgets saw.
    `pricing` (USD per million tokens, `{"input": ..., "output": ...}`, optionally
    `"cached_input"` for prompt tokens served from the provider's prompt cache) prices the role's
    calls itself, for models no price map knows.
    """

    name = "usage"

    def __init__(self, ledger: UsageLedger | None = None, *, pricing: Mapping[str, float] | None = None) -> None:
        self.ledger = ledger or LEDGER
        self.pricing = check_pricing(pricing) if pricing is not None else None

    def _priced(self, response: Response) -> Response:
        if self.pricing is None:
            return response
        usage = response.usage
        return response.replace(
            cost=cost_from_pricing(
                self.pricing,
                usage.prompt_tokens,
                usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            )
        )

    def __call__(self, request: Request, call_next: Handler) -> Response:
        run = request.metadata.get("run")
        try:
            response = self._priced(call_next(request))
        except Exception:
            self.ledger.record(request.role, request.model, error=True, run=run)
            raise
        self.ledger.record(request.role, request.model, response, run=run)
        return response

    async def acall(self, request: Request, call_next: AsyncHandler) -> Response:
        run = request.metadata.get("run")
        try:
            response = self._priced(await call_next(request))
        except Exception:
            self.ledger.record(request.role, request.model, error=True, run=run)
            raise
        self.ledger.record(request.role, request.model, response, run=run)
        return response

    def describe(self) -> str:
        return f"{self.name} (pricing {self.pricing})" if self.pricing else self.name
