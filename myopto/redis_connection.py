"""One Redis connection setup for everything a fleet of workers shares: the cache store, the
single-flight leases, and the rate and budget counters.

URLs: `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path?db=N`, and
`redis+cluster://host:port` / `rediss+cluster://...` for Redis Cluster (any node; db 0). Every
command myopto sends touches one key or keys of one hash slot, so the cluster routes it.
A URL is checked when it is configured (scheme, port, db), and the server is first reached on
the first command, which always comes before a request is sent. Connection failures are
retried briefly (redis-py's own retry: 3 tries, 50-500 ms apart), then become
`CacheUnavailable` naming the URL with its password masked; refused credentials and a db the
server does not have are `ConfigError`s that say what to fix. This module cannot know whether
the model was already called: a caller says what a failure means for its call (`consequence`,
e.g. `NOTHING_SENT` before a request is sent), and only such a caller says that nothing was sent.
redis-py (with hiredis, when installed, parsing replies) is imported on first use only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from myopto.errors import CacheUnavailable, ConfigError

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
# What a failure means for a call that has not been sent yet (the store's reads and leases, the
# limiter's checks): said only by those callers, never by this module on its own.
NOTHING_SENT = "nothing was sent to the model"
T = TypeVar("T")


def escape_glob(text: str) -> str:
    """`text` as a literal in a SCAN/KEYS match pattern: Redis's glob characters `* ? [ ] \\`
    escaped, so a namespace or key taken from a user never matches anything but itself."""
    return "".join("\\" + character if character in "*?[]\\" else character for character in text)


def is_redis_url(location: str | None) -> bool:
    """True when `location` names a Redis server (any URL scheme at all counts, to be checked)."""
    return bool(location) and "://" in str(location)


def redact(url: str) -> str:
    """The URL with its password replaced by `***`, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: Any, *, what: str = "MYOPTO_CACHE_URL") -> str:
    """Check a Redis URL's shape (before anything is sent) and return it; `ConfigError` otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{what} must be a Redis URL such as redis://localhost:6379/0, got {url!r}")
    parts = urlsplit(url)
    shown = redact(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"{what} {shown!r} has scheme {parts.scheme!r}; use redis://, rediss:// (TLS), unix:// or "
            "redis+cluster:// (Redis Cluster) "
            "(a cache directory is given as a path, with cache_dir= or MYOPTO_CACHE_DIR)"
        )
    try:
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"{what} {shown!r} has a port that is not a number 1-65535") from error
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{what} {shown!r} names no socket path: unix:///path/to/redis.sock?db=0")
        db = parse_qs(parts.query).get("db", ["0"])[0]
    else:
        if not parts.hostname:
            raise ConfigError(f"{what} {shown!r} names no host: redis://host:6379/0")
        if port == 0:
            raise ConfigError(f"{what} {shown!r} has port 0")
        db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"{what} {shown!r}: the database must be a number (redis://host:6379/0), got {db!r}")
    if parts.scheme.endswith("+cluster") and db != "0":
        raise ConfigError(f"{what} {shown!r}: Redis Cluster has only database 0")
    return url


class RedisConnection:
    """A lazily opened redis-py client for one URL, shared by the store and the limiter of a process.

    `run(fn)` calls `fn(client)` and turns redis-py's errors into myopto's.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = check_url(url)
        self.where = redact(url)
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._open()
        return self._client

    def _open(self) -> Any:
        try:
            import redis
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.retry import Retry
        except ImportError as error:
            raise ConfigError(
                f"{self.where} needs the Redis client: pip install 'myopto[redis]' (redis-py and hiredis)"
            ) from error
        options: dict[str, Any] = {
            "socket_connect_timeout": min(self.timeout, 2.0),
            "socket_timeout": self.timeout,
            "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 3),
            "health_check_interval": 30,
            "decode_responses": True,
            "client_name": "myopto",
        }
        scheme, _, rest = self.url.partition("://")
        client: redis.Redis | redis.RedisCluster
        if scheme.endswith("+cluster"):
            client = redis.RedisCluster.from_url(scheme.removesuffix("+cluster") + "://" + rest, **options)
        else:
            options["retry_on_error"] = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
            client = redis.Redis.from_url(self.url, **options)
        client.ping()
        return client

    def run(self, command: Callable[[Any], T], *, consequence: str = "") -> T:
        """`command(client)`, with redis-py's errors turned into `CacheUnavailable` / `ConfigError`
        (opening the connection first, on the first command). `consequence` ends the message of a
        server that cannot be reached: what that means for the caller's call."""
        return self._translate(lambda: command(self.client), consequence)

    def _translate(self, call: Callable[[], T], consequence: str = "") -> T:
        try:
            import redis.exceptions as errors
        except ImportError:
            return call()  # no client library: opening the connection says what to install
        tail = f"; {consequence}" if consequence else ""
        try:
            return call()
        except errors.AuthenticationError as error:
            raise ConfigError(
                f"Redis at {self.where} refused the credentials ({error}); fix the user and password "
                "in the URL (redis://user:password@host:port/db)"
            ) from error
        except errors.ResponseError as error:
            text = str(error)
            if "DB index" in text or "invalid DB" in text:
                raise ConfigError(
                    f"Redis at {self.where} has no such database ({text}); use a db number the server "
                    "has (0-15 unless its `databases` setting says more)"
                ) from error
            if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise ConfigError(f"Redis at {self.where} refused the credentials ({text})") from error
            raise CacheUnavailable(
                f"Redis at {self.where} refused a command: {text}{tail}", location=self.where
            ) from error
        except (errors.RedisError, errors.RedisClusterException) as error:
            raise CacheUnavailable(
                f"Redis at {self.where} cannot be reached ({type(error).__name__}: {error}) after brief retries{tail}",
                location=self.where,
            ) from error
        except OSError as error:
            raise CacheUnavailable(
                f"Redis at {self.where} cannot be reached ({error}){tail}",
                location=self.where,
            ) from error

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


_connections: dict[str, RedisConnection] = {}
_connections_lock = threading.Lock()


def redis_connection(url: str) -> RedisConnection:
    """The process's connection for `url` (one pool per URL, shared by store and limiter)."""
    with _connections_lock:
        connection = _connections.get(url)
        if connection is None:
            connection = _connections[url] = RedisConnection(url)
        return connection
