"""`MemoryLRU`: the in-process layer in front of every store, so a repeated request costs no I/O.

Besides the record it keeps, per key, the `Response` a hit is served as (immutable, so one
object serves every later hit in the process without building it again). It holds at most
`entries` records and at most `max_bytes` of their JSON text (64 MiB by default), whichever
comes first; a record larger than `max_bytes` is served from its store and not kept.

`decode_record` is the one reader of stored record text for every store: whatever a store hands
back that is not the JSON record myopto writes is a `DamagedCacheEntry`, never a raw
`JSONDecodeError` or `KeyError` later on.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from typing import Any, cast

from myopto.errors import DamagedCacheEntry

DEFAULT_MEMORY_ENTRIES = 4096
DEFAULT_MEMORY_BYTES = 64 * 2**20
# The record versions this myopto reads (the cache middleware writes RECORD_VERSION = 1).
READABLE_VERSIONS = (1,)


def decode_record(text: str | bytes, *, key: str, location: str) -> dict[str, Any]:
    """A stored record's text as the record, or `DamagedCacheEntry` saying what is wrong with it,
    which key and store it is, and how to replace it."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise ValueError(f"a stored {type(text).__name__}, not JSON text")
        record = json.loads(text)
    except ValueError as error:
        raise damaged_entry(key, location, f"not JSON ({error})") from error
    except RecursionError:  # valid JSON nested deeper than Python's stack: no record is
        raise damaged_entry(key, location, "JSON nested too deep to read") from None
    try:
        problem = record_problem(record)
    except RecursionError:  # parsed, but too deep to check (or to serve)
        problem = "JSON nested too deep to read"
    if problem is not None:
        raise damaged_entry(key, location, problem)
    return cast("dict[str, Any]", record)  # `record_problem` passed it: a JSON object


def damaged_entry(
    key: str, location: str, problem: str, *, kind: type[DamagedCacheEntry] = DamagedCacheEntry
) -> DamagedCacheEntry:
    """The error for a stored entry that cannot be served, with what to do about it."""
    return kind(
        f"the cached entry for key {key[:16]}... in {location} cannot be read back: {problem}. "
        "Call the request once with cache='refresh' to replace it, or empty the cache with "
        "`myopto cache clear`",
        key=key,
        location=location,
    )


def record_problem(record: Any) -> str | None:
    """What keeps `record` from being served as a cache hit, or None when it can be.

    The shape the cache middleware writes: an object with a `response` object whose `text` is a
    string, token counts that are whole numbers, a numeric or null cost, choices and usage
    details (when present) that `Response` reads, and no field a `Response` does not have;
    `version`, when present, one this myopto reads; `request`, when present, an object.
    (`myopto cache import` asks more: see `myopto.cache_transfer`.)
    """
    if not isinstance(record, dict):
        return f"a JSON {_kind(record)}, not a record object"
    version = record.get("version", READABLE_VERSIONS[0])
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        return f"record version {version!r} is not one this myopto reads ({', '.join(map(str, READABLE_VERSIONS))})"
    if "request" in record and not isinstance(record["request"], dict):
        return f"'request' is a JSON {_kind(record['request'])}, not an object"
    response = record.get("response")
    if not isinstance(response, dict):
        return "no 'response' object" if response is None else f"'response' is a JSON {_kind(response)}, not an object"
    return _response_problem(response)


def _response_problem(response: dict[str, Any]) -> str | None:
    fields = _FIELDS or _response_fields()
    if not fields.issuperset(response):
        unknown = sorted(set(response) - fields)
        return f"'response' has fields a response does not have: {', '.join(map(repr, unknown[:5]))}"
    if not isinstance(response.get("text"), str):
        return f"'response.text' is {_kind(response.get('text'))}, not a string"
    usage = response.get("usage", {})
    if not isinstance(usage, dict):
        return f"'response.usage' is a JSON {_kind(usage)}, not an object"
    for name, count in usage.items():
        if name in _USAGE_DETAILS:
            continue  # checked with the choices below
        if name not in ("prompt_tokens", "completion_tokens", "total_tokens"):
            return f"'response.usage' has an unknown count {name!r}"
        if not _is_whole(count):
            return f"'response.usage.{name}' is {count!r}, not a whole number of tokens"
    for name in ("cost", "latency"):
        value = response.get(name)
        if value is not None and not _is_number(value):
            return f"'response.{name}' is {value!r}, not a number"
    for name in ("model", "id"):
        if name in response and not isinstance(response[name], str):
            return f"'response.{name}' is {_kind(response[name])}, not a string"
    finish = response.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        return f"'response.finish_reason' is {_kind(finish)}, not a string"
    if "created" in response and not _is_number(response["created"]):
        return f"'response.created' is {response['created']!r}, not a number"
    if "choices" in response or _USAGE_DETAILS.intersection(usage):
        return _parts_problem(response, usage)
    return None


_USAGE_DETAILS = frozenset({"prompt_tokens_details", "completion_tokens_details"})


def _parts_problem(response: dict[str, Any], usage: dict[str, Any]) -> str | None:
    """What is wrong with the parts a record holds beyond the text (every choice with its tool
    calls, reasoning and logprobs; the usage details), or None. They are checked by building
    them, so a stored record is read exactly as `Response` reads it."""
    from myopto.response import Usage, choices_of

    try:
        Usage(**usage)
    except (TypeError, ValueError) as error:
        return f"'response.usage' cannot be read: {error}"
    if "choices" not in response:
        return None
    choices = response["choices"]
    if not isinstance(choices, list):
        return f"'response.choices' is a JSON {_kind(choices)}, not a list of choices"
    if not choices:
        return "'response.choices' is empty"
    try:
        choices_of(choices)
    except (TypeError, ValueError) as error:
        return f"'response.choices' cannot be read: {error}"
    return None


_FIELDS: frozenset[str] | None = None


def _response_fields() -> frozenset[str]:
    """The fields a stored response may have: those of `Response` but `raw` (read once)."""
    global _FIELDS
    import dataclasses

    from myopto.response import Response

    _FIELDS = frozenset(field.name for field in dataclasses.fields(Response)) - {"raw"}
    return _FIELDS


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _is_whole(value: Any) -> bool:
    return type(value) is int and value >= 0  # not a bool, not a float


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # not a bool


class MemoryLRU:
    """A thread-safe least-recently-used map of cache key -> record.

    Bounded twice: at most `entries` records, and at most `max_bytes` of their JSON text (the
    size the store read or wrote, so nothing is serialised again to measure it). Records are
    immutable once written (a key always names the same request), so a copy kept here never
    goes stale; `clear()` empties it when the store behind it is cleared.
    """

    def __init__(self, entries: int = DEFAULT_MEMORY_ENTRIES, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self._items: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._responses: dict[str, Any] = {}
        self._entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        """The JSON text size of the records held."""
        return self._bytes

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            kept = self._items.get(key)
            if kept is None:
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return kept[0]

    def put(self, key: str, record: dict[str, Any], size: int = 0) -> None:
        """Keep `record` (`size`: the length of its JSON text), dropping the least recently used
        records while either bound is passed. A record larger than `max_bytes` is not kept."""
        with self._lock:
            old = self._items.pop(key, None)
            self._responses.pop(key, None)  # a new record: its hit is built anew
            if old is not None:
                self._bytes -= old[1]
            if size > self._max_bytes:
                return
            self._items[key] = (record, size)
            self._bytes += size
            while len(self._items) > self._entries or self._bytes > self._max_bytes:
                dropped, (_, dropped_size) = self._items.popitem(last=False)
                self._bytes -= dropped_size
                self._responses.pop(dropped, None)

    def hit(self, key: str) -> Any:
        """The `Response` kept for a hit on `key`, or None (no lock: a dict read is atomic)."""
        response = self._responses.get(key)
        if response is not None:
            self.hits += 1
        return response

    def keep_hit(self, key: str, response: Any) -> None:
        """Keep the `Response` served for `key` while its record is in memory."""
        with self._lock:
            if key in self._items:
                self._responses[key] = response

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._responses.clear()
            self._bytes = 0


class MemoryFronted:
    """What every store shares: JSON-text records behind a `MemoryLRU` (`self.memory`).

    A store supplies `_read(key) -> str | bytes | None` and `_write(key, text)` and sets `location`;
    reads go to memory first, whatever is read or written is remembered there, and text read
    back goes through `decode_record` (a damaged entry raises `DamagedCacheEntry`).
    """

    memory: MemoryLRU
    location: str

    def _read(self, key: str) -> str | bytes | None:
        raise NotImplementedError

    def _write(self, key: str, text: str) -> None:
        raise NotImplementedError

    def in_memory(self, key: str) -> bool:
        return key in self.memory

    def get(self, key: str) -> dict[str, Any] | None:
        record = self.memory.get(key)
        if record is not None:
            return record
        text = self._read(key)
        return None if text is None else self._remember(key, text)

    def set(self, key: str, record: dict[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        self._write(key, text)
        self.memory.put(key, record, len(text))

    def _remember(self, key: str, text: str | bytes) -> dict[str, Any]:
        record = decode_record(text, key=key, location=self.location)
        self.memory.put(key, record, len(text))
        return record
