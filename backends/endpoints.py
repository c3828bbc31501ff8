"""The endpoint of a backend as the cache key and `myopto roles` name it: a base URL in one
spelling per destination, and the extra headers that route a call, with no credential in either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from myopto.logs import is_secret_name, redact

_DEFAULT_PORTS = {"http": 80, "https": 443}
MASK = "***"


def endpoint_url(url: str) -> str:
    """A base URL in the one spelling the cache key and `myopto roles` use.

    Scheme and host lower-cased, a default port and a trailing `/` dropped (the SDKs send the
    same requests either way; a bare host keeps its root `/`), the fragment dropped (never sent).
    Credentials are masked, not kept: user name and password, and the values of secret-looking
    query parameters (`?api-key=...`, `is_secret_name`). Different keys to one server reach the
    same model, as a different `api_key` does, so the cache key does not depend on them; other
    query parameters (`?api-version=...`) are kept as written, in their order.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # such as a broken IPv6 address
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:  # not a URL (the SDK will say so): as written
        return url.strip()
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: keep what was written, the SDK will refuse it
        port, host = None, parts.netloc.rpartition("@")[2].lower()
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        host = f"{MASK}@{host}"
    query = "&".join(_masked_parameter(parameter) for parameter in parts.query.split("&") if parameter)
    path = parts.path.rstrip("/") or "/"  # the root keeps its slash: what follows a host stays out of it
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def headers_key(*headers: Mapping[str, Any] | None) -> str:
    """The extra headers a call sends, as part of its endpoint (and so of the cache key): a proxy
    may route on one (`x-route`, `anthropic-beta`, Helicone's and Portkey's headers), so two
    values are two destinations. Names lower-cased (HTTP's spelling does not matter) and sorted;
    a later mapping's header replaces an earlier one's. Credentials are left out, never masked
    in: headers of a secret-looking name (`is_secret_name`: `Authorization`, `x-api-key`,
    `Cookie`, ...) and values that hold a registered secret or a `Bearer ...` credential.
    "" when no header is keyed. Computed once per backend, not per call.
    """
    kept: dict[str, str] = {}
    for mapping in headers:
        for given, value in (mapping or {}).items():
            name = str(given).lower()  # after the secret check: `XApiKey` is secret by its camel case
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if (
                is_secret_name(given)
                or is_secret_name(name)
                or "authorization" in name
                or redact(text) != text
                or _is_credential(text)
            ):
                kept.pop(name, None)
                continue
            kept[name] = text
    if not kept:
        return ""
    return "headers=" + json.dumps(dict(sorted(kept.items())), ensure_ascii=False, separators=(",", ":"))


def _is_credential(value: str) -> bool:
    """A header value of the form `<scheme> <credential>` with a credential scheme."""
    scheme, _, credential = value.strip().partition(" ")
    return scheme.lower() in ("bearer", "basic", "token", "digest") and bool(credential.strip())


def _masked_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}={MASK}" if equals and is_secret_name(unquote_plus(name)) else parameter
