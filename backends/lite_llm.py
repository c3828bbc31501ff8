"""`LiteLLM`: every cloud provider LiteLLM knows (OpenAI, Anthropic, Azure, Bedrock, ...)."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any, ClassVar

from myopto.backends.base import BaseBackend, backend_error, completion_response, is_sdk_error
from myopto.request import Request
from myopto.response import Response

_import_lock = threading.Lock()
_litellm: Any = None


def import_litellm() -> Any:
    """Import litellm once, offline-safe.

    LiteLLM downloads its model price map at import unless told otherwise; offline that costs
    seconds of retries, and a price map that changes under a run makes costs unreproducible.
    We use the copy it ships unless the user set `LITELLM_LOCAL_MODEL_COST_MAP` themselves.
    """
    global _litellm
    if _litellm is None:
        with _import_lock:
            if _litellm is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                import litellm

                litellm.suppress_debug_info = True
                _litellm = litellm
    return _litellm


# LiteLLM's provider names -> OpenTelemetry GenAI `gen_ai.provider.name` where they differ.
_GENAI_PROVIDERS = {
    "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai", "gemini": "gcp.gemini", "mistral": "mistral_ai", "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


class LiteLLM(BaseBackend):
    """Calls `litellm.completion` / `litellm.acompletion`.

    Options: `api_key`, `base_url` (LiteLLM's `api_base`), `api_version` (Azure), `timeout`,
    `max_retries` (LiteLLM's own retries; 0 by default because myopto's retry middleware owns
    retrying), `extra_headers`, and `extra` (a dict of any further `litellm.completion` keyword).
    """

    kind: ClassVar[str] = "LiteLLM"
    supports_json_schema: ClassVar[bool] = True
    supports_json_object: ClassVar[bool] = True
    reports_cost: ClassVar[bool] = True
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"base_url", "api_key", "api_version", "timeout", "max_retries", "extra_headers", "extra"}
    )
    default_model: ClassVar[str | None] = "gpt-4o"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_version: str | None = None,
        timeout: float | None = None,
        max_retries: int = 0,
        extra_headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base_url = base_url
        self._api_key = api_key
        self.api_version = api_version
        self.timeout = timeout
        self.max_retries = max_retries
        self.extra_headers = dict(extra_headers or {})
        self.extra = dict(extra or {})

    def __repr__(self) -> str:  # never show the key
        return f"LiteLLM(base_url={self.base_url!r})"

    def endpoint(self) -> str | None:
        return self.base_url

    def _arguments(self, request: Request) -> dict[str, Any]:
        params = request.params_dict()
        params.pop("constrained", None)  # local-model option; providers enforce JSON natively
        if "max_new_tokens" in params:
            params.setdefault("max_tokens", params.pop("max_new_tokens"))
        arguments: dict[str, Any] = {
            **self.extra,
            "model": request.model,
            "messages": request.messages_list(),
            "max_retries": self.max_retries,
            **params,
        }
        optional = {
            "api_key": self._api_key,
            "api_base": self.base_url,
            "api_version": self.api_version,
            "extra_headers": self.extra_headers or None,
            "response_format": request.response_format_dict(),
            "timeout": _steady(request.timeout if request.timeout is not None else self.timeout),
        }
        arguments.update({key: value for key, value in optional.items() if value is not None})
        return arguments

    def provider_name(self, model: str) -> str:
        try:
            provider = import_litellm().get_llm_provider(model)[1]
        except Exception:  # a model LiteLLM cannot place: the span says so rather than failing
            return "unknown"
        return _GENAI_PROVIDERS.get(provider, provider)

    def prepare(self) -> None:
        import_litellm()

    def complete(self, request: Request) -> Response:
        litellm = import_litellm()
        start = time.perf_counter()
        try:
            raw = litellm.completion(**self._arguments(request))
        except Exception as error:
            if not is_sdk_error(error):
                raise
            raise backend_error(error, self.kind, request) from error
        return self._response(litellm, raw, request, time.perf_counter() - start)

    async def acomplete(self, request: Request) -> Response:
        litellm = import_litellm()
        start = time.perf_counter()
        try:
            raw = await litellm.acompletion(**self._arguments(request))
        except Exception as error:
            if not is_sdk_error(error):
                raise
            raise backend_error(error, self.kind, request) from error
        return self._response(litellm, raw, request, time.perf_counter() - start)

    def _response(self, litellm: Any, raw: Any, request: Request, latency: float) -> Response:
        return completion_response(raw, request, latency, self.kind, lambda tokens: _cost(litellm, raw, request.model))


def _steady(timeout: float | None) -> float | None:
    """Whole seconds above 10 s. LiteLLM keeps one HTTP client per distinct timeout value, so the
    ever-shrinking timeouts retry clips to its deadline would otherwise build a client per call."""
    if timeout is None or timeout < 10:
        return timeout
    return float(math.ceil(timeout))


def _cost(litellm: Any, raw: Any, model: str) -> float | None:
    """USD cost from LiteLLM's price map; None when the model is not in it (unknown, not free).

    Models the map does not list are answered without asking LiteLLM: its `completion_cost`
    raises for them, and raising costs more than the call's own overhead.
    """
    hidden = getattr(raw, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    if cost is None:
        prices = litellm.model_cost
        if model not in prices and model.split("/", 1)[-1] not in prices:
            return None
        try:
            cost = litellm.completion_cost(completion_response=raw, model=model)
        except Exception:  # LiteLLM raises a variety of errors for models it cannot price
            return None
    try:
        return float(cost)
    except (TypeError, ValueError):
        return None
