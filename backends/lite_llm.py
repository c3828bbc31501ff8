"""`LiteLLM`: every cloud provider LiteLLM knows (OpenAI, Anthropic, Azure, Bedrock, ...)."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from myopto.errors import ConfigError
from myopto.logs import is_secret_name, redact
from myopto.price_map import litellm_cost
from myopto.request import Request, is_json_data, key_numbers
from myopto.response import Response, Usage
from myopto.settings import provider_endpoint_settings

from .base import BaseBackend
from .completion import completion_response
from .endpoints import endpoint_url, headers_key
from .sdk_errors import sdk_failure
from .stream_reading import aread_stream, read_stream

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
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


# `extra` keywords that change how a call is made, logged or authenticated, not what it answers
# (the API base and version are keyed on their own; credentials never are).
_UNKEYED_EXTRAS = frozenset(
    {
        "api_base",
        "base_url",
        "api_version",
        "timeout",
        "request_timeout",
        "stream_timeout",
        "max_retries",
        "num_retries",
        "metadata",
        "litellm_metadata",
        "logger_fn",
        "litellm_logging_obj",
        "litellm_call_id",
        "client",
        "extra_headers",
        "headers",
        "caching",
        "cache",
        "no-log",
        "mock_timeout",
    }
)


class LiteLLM(BaseBackend):
    """Calls `litellm.completion` / `litellm.acompletion`.

    Options: `api_key`, `base_url` (LiteLLM's `api_base`), `api_version` (Azure), `timeout`,
    `max_retries` (LiteLLM's own retries; 0 by default because myopto's retry middleware owns
    retrying), `extra_headers`, and `extra` (a dict of any further `litellm.completion` keyword).

    Its endpoint (in the cache key) is where LiteLLM sends a call and how: the API base given
    (`base_url`, else `extra`'s `api_base` / `base_url`), else the values of the base-URL
    variables LiteLLM reads for the model's provider (`OPENAI_BASE_URL`, `AZURE_API_BASE`, ...);
    the API version (given, else `<PROVIDER>_API_VERSION`); every other `extra` keyword
    that is JSON data and may reach the provider (`custom_llm_provider`, `drop_params`,
    provider fields, ...), minus credentials and keywords that only change how a call is made;
    and the headers sent (`extra_headers`, `extra`'s `headers` / `extra_headers`) but
    credentials (`headers_key`), on which a proxy may route.

    A streamed call (`request.sink`) asks for the usage in the last chunk
    (`stream_options.include_usage`; LiteLLM counts it where the provider does not) and reads the
    stream with `stream_reading`; it is priced as a plain call is, from the same usage.
    """

    kind: ClassVar[str] = "LiteLLM"
    supports_json_schema: ClassVar[bool] = True
    supports_json_object: ClassVar[bool] = True
    reports_cost: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True
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
        if extra is not None and not isinstance(extra, Mapping):
            raise ConfigError(
                f"LiteLLM's extra must be a dict of litellm.completion keywords, got {type(extra).__name__}"
            )
        self.base_url = base_url
        self._api_key = api_key
        self.api_version = api_version
        self.timeout = timeout
        self.max_retries = max_retries
        self.extra_headers = dict(extra_headers or {})
        self.extra = dict(extra or {})
        api_base = base_url or self.extra.get("api_base") or self.extra.get("base_url")
        self._api_base = endpoint_url(api_base) if isinstance(api_base, str) else None
        self._api_version = api_version or self.extra.get("api_version")
        provider = self.extra.get("custom_llm_provider")
        self._provider = provider if isinstance(provider, str) and provider else None
        wire = {key: value for key, value in self.extra.items() if key not in _UNKEYED_EXTRAS and is_json_data(value)}
        wire = redact(_without_credentials(wire))  # and any registered secret that sits under another name
        self._extras = f"extra={json.dumps(key_numbers(wire), sort_keys=True, separators=(',', ':'))}" if wire else ""
        # the headers sent (a proxy may route on one), as `_arguments` sends them: `extra`'s, then ours
        self._headers = headers_key(
            *(
                value
                for value in (self.extra.get("headers"), self.extra.get("extra_headers"))
                if isinstance(value, Mapping)
            ),
            self.extra_headers,
        )
        # model -> (the provider's variables as read, the endpoint they gave)
        self._endpoints: dict[str, tuple[Any, str | None]] = {}

    def __repr__(self) -> str:  # never show the key, nor one in the URL's query
        return f"LiteLLM(base_url={self._api_base!r})"

    def endpoint(self) -> str | None:
        """The endpoint of a call to a model named without a provider (see the class doc)."""
        return self.endpoint_for("")

    def endpoint_for(self, model: str) -> str | None:
        """Where a call to `model` goes and how (see the class doc); the environment's part is
        read through a snapshot, so this stays a few dictionary lookups per call."""
        provider = self._provider or (model.partition("/")[0] if "/" in model else None)
        environment = provider_endpoint_settings(provider)
        known = self._endpoints.get(model)
        if known is not None and known[0] is environment:
            return known[1]
        endpoint = self._describe_endpoint(environment)
        if len(self._endpoints) > 64:  # models named per call: keep the table small
            self._endpoints.clear()
        self._endpoints[model] = (environment, endpoint)
        return endpoint

    def _describe_endpoint(self, environment: tuple[tuple[str, str], ...]) -> str | None:
        bases = (
            [self._api_base]
            if self._api_base
            else list(
                dict.fromkeys(endpoint_url(value) for name, value in environment if not name.endswith("_API_VERSION"))
            )
        )
        version = self._api_version or next(
            (value for name, value in environment if name.endswith("_API_VERSION")), None
        )
        parts = [*bases, f"api_version={version}" if version else "", self._extras, self._headers]
        return " ".join(part for part in parts if part) or None

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
        if request.sink is not None:
            arguments["stream"] = True
            arguments["stream_options"] = {**(arguments.get("stream_options") or {}), "include_usage": True}
        return arguments

    def provider_name(self, model: str) -> str:
        try:
            provider: str = import_litellm().get_llm_provider(model)[1]
        except Exception:  # noqa: BLE001 - a model LiteLLM cannot place: the span says so rather than failing
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
            failure = sdk_failure(error, self.kind, request)
            if failure is None:  # our own code's error, not the provider's
                raise
        else:
            if request.sink is not None:
                endpoint = self.endpoint_for(request.model)
                return read_stream(raw, request, self.kind, endpoint, start, self._price(litellm, request))
            return self._response(litellm, raw, request, time.perf_counter() - start)
        # raised here, not in the except block: the SDK's exception (which may quote the key
        # back) is neither the cause nor the context of what the caller sees
        raise failure

    async def acomplete(self, request: Request) -> Response:
        litellm = import_litellm()
        start = time.perf_counter()
        try:
            raw = await litellm.acompletion(**self._arguments(request))
        except Exception as error:
            failure = sdk_failure(error, self.kind, request)
            if failure is None:  # our own code's error, not the provider's
                raise
        else:
            if request.sink is not None:
                endpoint = self.endpoint_for(request.model)
                return await aread_stream(raw, request, self.kind, endpoint, start, self._price(litellm, request))
            return self._response(litellm, raw, request, time.perf_counter() - start)
        # raised here, not in the except block: the SDK's exception (which may quote the key
        # back) is neither the cause nor the context of what the caller sees
        raise failure

    def _response(self, litellm: Any, raw: Any, request: Request, latency: float) -> Response:
        # LiteLLM prices every token class (cached prompt tokens, reasoning tokens) from the price
        # map the litellm package ships, whichever package imported litellm first
        return completion_response(
            raw, request, latency, self.kind, lambda tokens: litellm_cost(litellm, raw, request.model)
        )

    @staticmethod
    def _price(litellm: Any, request: Request) -> Callable[[Usage], float | None]:
        """A streamed call's pricing: LiteLLM's, as for a plain call, of an answer with its usage."""

        def price(tokens: Usage) -> float | None:
            answer = litellm.ModelResponse(model=request.model, usage=litellm.Usage(**tokens.model_dump()))
            return litellm_cost(litellm, answer, request.model)

        return price


def _without_credentials(value: Any) -> Any:
    """`value` without the entries under secret-looking names, at any depth."""
    if isinstance(value, Mapping):
        return {key: _without_credentials(item) for key, item in value.items() if not is_secret_name(key)}
    if isinstance(value, list):
        return [_without_credentials(item) for item in value]
    return value


def _steady(timeout: float | None) -> float | None:
    """Whole seconds above 10 s. LiteLLM keeps one HTTP client per distinct timeout value, so the
    ever-shrinking timeouts retry clips to its deadline would otherwise build a client per call."""
    if timeout is None or timeout < 10:
        return timeout
    return float(math.ceil(timeout))
