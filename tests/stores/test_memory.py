"""The memory front of every store: bounded in entries and in bytes, and cheap on a hit."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc

import pytest

from myopto.errors import DamagedCacheEntry
from myopto.stores.disk import DiskStore
from myopto.stores.memory import DEFAULT_MEMORY_BYTES, MemoryLRU, decode_record

MIB = 2**20


def answer(i: int, size: int) -> dict:
    return {"version": 1, "request": {"i": i}, "response": {"text": chr(ord("a") + i % 26) * size}}


def test_a_hundred_answers_of_one_megabyte_stay_within_the_byte_bound(tmp_path):
    store = DiskStore(tmp_path / "c")
    tracemalloc.start()
    try:
        for i in range(100):
            store.set(f"key-{i}", answer(i, MIB))
        for i in range(100):  # read back, the early ones from disk
            assert store.get(f"key-{i}")["response"]["text"] == chr(ord("a") + i % 26) * MIB
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < DEFAULT_MEMORY_BYTES + 16 * MIB, f"{held / MIB:.0f} MiB held for 100 MiB of answers"
    assert store.memory.size_bytes <= DEFAULT_MEMORY_BYTES
    assert len(store.memory) <= 64
    assert store.in_memory("key-99") and not store.in_memory("key-0")


def test_the_entry_bound_and_the_byte_bound_each_evict_the_least_recently_used():
    memory = MemoryLRU(entries=3, max_bytes=1000)
    for key in "abc":
        memory.put(key, {"k": key}, 10)
    memory.get("a")  # used: "b" is now the oldest
    memory.put("d", {"k": "d"}, 10)
    assert [key in memory for key in "abcd"] == [True, False, True, True]
    memory.put("e", {"k": "e"}, 985)  # 1015 bytes with the others: the oldest go
    assert "e" in memory and memory.size_bytes <= 1000 and "c" not in memory
    memory.put("e", {"k": "e"}, 5)  # replacing a record counts its new size only
    assert memory.size_bytes == sum(10 for key in "ad" if key in memory) + 5


def test_a_record_larger_than_the_byte_bound_is_served_from_its_store_and_not_kept(tmp_path):
    store = DiskStore(tmp_path / "c", memory_bytes=10_000)
    store.set("huge", answer(0, 50_000))
    assert not store.in_memory("huge") and store.memory.size_bytes == 0
    assert store.get("huge")["response"]["text"] == "a" * 50_000
    assert not store.in_memory("huge")


def test_a_memory_hit_costs_no_serialising_even_for_a_large_answer(tmp_path):
    store = DiskStore(tmp_path / "c")
    store.set("big", answer(0, MIB))
    start = time.perf_counter()
    for _ in range(20_000):
        store.get("big")
    assert time.perf_counter() - start < 1.0  # ~20 ms; re-encoding 1 MB per hit would take minutes


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "a JSON array, not a record object"),
        ('{"version": 1}', "no 'response' object"),
        ('{"response": "hi"}', "'response' is a JSON string"),
        ('{"response": {"text": 5}}', "'response.text' is number, not a string"),
        ('{"response": {"text": "a", "usage": {"prompt_tokens": "7"}}}', "not a whole number"),
        ('{"response": {"text": "a", "cost": "free"}}', "'response.cost' is 'free', not a number"),
        ('{"response": {"text": "a", "colour": "red"}}', "fields a response does not have: 'colour'"),
        ('{"version": 99, "response": {"text": "a"}}', "record version 99"),
        ('{"request": [], "response": {"text": "a"}}', "'request' is a JSON array"),
    ],
)
def test_decode_record_names_the_key_the_store_and_what_is_wrong(text, problem):
    with pytest.raises(DamagedCacheEntry) as damaged:
        decode_record(text, key="ab" * 32, location="/some/cache")
    message = str(damaged.value)
    assert problem in message and "abababababababab..." in message and "/some/cache" in message
    assert "cache='refresh'" in message
    assert damaged.value.key == "ab" * 32 and damaged.value.location == "/some/cache"


def test_decode_record_reads_what_the_cache_writes():
    record = {
        "version": 1,
        "created": 1.5,
        "run": None,
        "role": "executor",
        "request": {"model": "m"},
        "response": {
            "text": "hi",
            "model": "m",
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            "cost": None,
            "parsed": None,
            "cached": False,
            "latency": 0.1,
            "finish_reason": "stop",
            "id": "chatcmpl-1",
            "created": 5,
        },
    }
    assert decode_record(json.dumps(record), key="k", location="here") == record
