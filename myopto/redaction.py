"""Secrets kept out of logs, spans, exception events and reprs: which values are credentials, and
masking them.

Keys that name credentials are dropped and every known secret value is masked wherever it
appears. Known secrets are the values registered here (`register_secrets_in` finds them in a
role's options: `api_key`, credential-named options and headers in `extra_headers` or LiteLLM's
`extra`, `Bearer`/`Basic`/`Token` header values, a URL's password and credential-named query
parameters) and the `*_API_KEY`/`*_TOKEN`/`*_KEY`/`*SECRET*` variables. `redact` masks a log
record or a message; `redact_options` shows a configuration with every credential in it masked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from myopto.settings import secret_values

# Names dropped from a log record whatever their value (a record never carries credentials).
_SECRET_KEYS = frozenset({"api_key", "apikey", "api-key", "x-api-key", "authorization", "password", "secret"})
_MASK = "***"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# (registered secrets, environment secrets) -> every secret, longest first; rebuilt when either changes
_sorted: tuple[frozenset[str], tuple[str, ...], list[str]] = (frozenset(), (), [])


def register_secret(value: str | bytes | None) -> None:
    """Mask this value in every log line, span and repr from now on (role keys are registered for you)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value.strip()) >= 4:
        with _secrets_lock:
            _secrets.update({value, value.strip()})


# Option, header and query-parameter names whose values are credentials, wherever they sit in a
# role's options (`extra_headers`, LiteLLM's `extra`, a URL's query string): a name is secret when
# one of its words (split on `_`, `-`, `.`, spaces and camelCase) is one of these.
_SECRET_NAME_PARTS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "signature",
        "sig",
        "cookie",
    }
)
# `<scheme> <credential>`, as in an Authorization header; under any name for these schemes
_AUTH_VALUE = re.compile(r"\s*([A-Za-z][\w-]*)\s+(\S+)\s*")
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token"})


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    words = re.split(r"[_.\-\s]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return name.lower() in _SECRET_KEYS or not _SECRET_NAME_PARTS.isdisjoint(words)


def is_secret_name(name: Any) -> bool:
    """True when an option, header or query parameter of this name holds a credential."""
    return _is_secret_name(str(name))


def secrets_in_url(url: str) -> list[str]:
    """The credentials a URL carries: its password and the values of credential-named query
    parameters, each as written and as decoded (either spelling may reach a message). Cheap to
    ask again for the same URL (an environment variable read for every log line)."""
    return list(_secrets_in_url(url)) if "://" in url else []


@functools.lru_cache(maxsize=256)
def _secrets_in_url(url: str) -> tuple[str, ...]:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ()
    found: list[str] = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    for pair in re.split(r"[&;]", parts.query):
        name, equals, value = pair.partition("=")
        if equals and len(value) >= 8 and is_secret_name(unquote_plus(name)):
            found += [value, unquote(value), unquote_plus(value)]
    return tuple(secret for secret in dict.fromkeys(found) if len(secret) >= 4)


def _secrets_in_text(value: str, name: Any) -> list[str]:
    """The credentials a single option value carries, given the name it sits under."""
    found = secrets_in_url(value)
    scheme = _AUTH_VALUE.fullmatch(value)
    if scheme is not None and (scheme.group(1).lower() in _AUTH_SCHEMES or (name is not None and is_secret_name(name))):
        token = scheme.group(2)
        found.append(token)
        if scheme.group(1).lower() == "basic":
            # `Basic base64(user:password)`: the password may show up in clear elsewhere
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                found.append(base64.b64decode(token, validate=True).decode("utf-8").partition(":")[2])
    # a value found by its name is masked only when long enough to be a credential, so a short
    # word under an odd name (`key="name"`) is not masked in every log line
    if name is not None and is_secret_name(name) and len(value.strip()) >= 8:
        found.append(value)
    return found


def register_secrets_in(value: Any, *, name: Any = None) -> None:
    """Register every credential found in `value` (a role's options, at any depth) for masking.

    A credential is the value under a secret-looking name (`api_key`, `Authorization`,
    `x-api-key`, `token`, ...), the credential after an authorization scheme (`Bearer `,
    `Basic `, `Token `) under any name, a URL's password, and the values of secret-looking query
    parameters of a URL (as written and percent-decoded).
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            register_secrets_in(item, name=key)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            register_secrets_in(item, name=name)
    elif isinstance(value, (str, bytes)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for secret in _secrets_in_text(text, name):
            register_secret(secret)


def _all_secrets() -> list[str]:
    """Every secret to mask, longest first (so a secret that contains another is masked whole)."""
    global _sorted
    registered, environment, ordered = _sorted
    current_environment = tuple(secret_values())
    if len(_secrets) != len(registered) or current_environment != environment:
        with _secrets_lock:
            registered = frozenset(_secrets)
        ordered = sorted({*registered, *current_environment}, key=len, reverse=True)
        _sorted = (registered, current_environment, ordered)
    return ordered


def redact(value: Any) -> Any:
    """`value` with credential keys dropped and known secret strings masked, at any depth."""
    return _redact(value, _all_secrets())


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _mask(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redact(v, secrets) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, (list, tuple)):
        return [_redact(item, secrets) for item in value]
    return value


def redact_options(value: Any) -> Any:
    """A configuration (options, headers, LiteLLM's `extra`) fit to show: every value under a
    secret-looking name is `***`, credentials in URLs and authorization headers are masked, and
    so is every known secret, whether or not the configuration was registered."""
    return _redact_options(value, None, _all_secrets())


def _redact_options(value: Any, name: Any, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: _redact_options(item, key, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_options(item, name, secrets) for item in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return value
    if name is not None and is_secret_name(name):
        return _MASK
    found = sorted(_secrets_in_text(value, name), key=len, reverse=True)
    return _mask(_mask(value, found), secrets)
