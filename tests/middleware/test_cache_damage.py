"""A damaged cache entry: a reported miss where the mode may call the model (replaced by the new
answer in `on`), an error in `replay`; never a raw TypeError/KeyError/JSONDecodeError.
Real DiskStores (damaged through the store and with sqlite3 on its file) and a real redis-server."""

import logging
import sqlite3

import pytest
from testkit import use_cache, use_redis_cache

from myopto import get_llm
from myopto.errors import DamagedCacheEntry
from myopto.stores.disk import DiskStore, disk_store

WRONG_SHAPES = [
    {"version": 1},  # no response
    {"version": 1, "response": {"txt": "a misspelt field"}},
    {"version": 1, "response": {"text": 5}},
    {"version": 1, "response": {"text": "x", "usage": {"prompt_tokens": "3"}}},
    {"version": 1, "response": {"text": "x", "usage": {"tokens": 3}}},
    {"version": 1, "response": {"text": "x", "cost": "free"}},
    {"version": 1, "response": "not an object"},
]


@pytest.fixture
def role(server, tmp_path):
    directory = tmp_path / "cache"
    use_cache(server, directory, model="m1")
    return server, directory


def key_of_prompt(prompt):
    return get_llm().request(prompt).fingerprint()


def damage_warnings(caplog):
    return [
        r
        for r in caplog.records
        if r.name == "myopto.cache" and r.levelno == logging.WARNING and "damaged" in r.getMessage()
    ]


@pytest.mark.parametrize("record", WRONG_SHAPES)
def test_a_wrong_shaped_record_is_a_reported_miss_and_on_mode_replaces_it(role, record, caplog):
    server, directory = role
    key = key_of_prompt("hello")
    disk_store(directory).set(key, record)
    with caplog.at_level(logging.WARNING, logger="myopto.cache"):
        first = get_llm()("hello")
        second = get_llm()("hello")
    assert (first.text, first.cached) == ("echo: hello", False)
    assert second.cached and server.request_count == 1  # the new answer replaced the damaged one
    assert len(damage_warnings(caplog)) == 1
    assert key[:16] in damage_warnings(caplog)[0].getMessage()
    stored = dict(DiskStore(directory).items())[key]
    assert stored["response"]["text"] == "echo: hello"


def test_read_only_calls_past_a_damaged_entry_and_warns_once(role, caplog):
    server, directory = role
    disk_store(directory).set(key_of_prompt("hello"), WRONG_SHAPES[1])
    with caplog.at_level(logging.WARNING, logger="myopto.cache"):
        answers = [get_llm()("hello", cache="read_only") for _ in range(3)]
    assert [a.text for a in answers] == ["echo: hello"] * 3 and server.request_count == 3
    assert len(damage_warnings(caplog)) == 1


async def test_async_calls_treat_a_damaged_entry_as_a_miss(role, caplog):
    _, directory = role
    disk_store(directory).set(key_of_prompt("hello"), WRONG_SHAPES[2])
    with caplog.at_level(logging.WARNING, logger="myopto.cache"):
        first = await get_llm().acall("hello")
    assert first.text == "echo: hello" and not first.cached
    assert (await get_llm().acall("hello")).cached
    assert len(damage_warnings(caplog)) == 1


def test_replay_raises_the_damage_and_sends_nothing(role):
    server, directory = role
    key = key_of_prompt("hello")
    disk_store(directory).set(key, WRONG_SHAPES[1])
    with pytest.raises(DamagedCacheEntry, match="damaged") as raised:
        get_llm()("hello", cache="replay")
    assert raised.value.key == key and server.request_count == 0


def damage_row(directory, key, text):
    """Overwrite the stored value of `key` in the directory's SQLite file, as a broken disk or a
    hand edit would."""
    with sqlite3.connect(directory / "cache.db") as db:
        changed = db.execute("UPDATE Cache SET value = ? WHERE key = ?", (text, key)).rowcount
    assert changed == 1


@pytest.mark.parametrize(
    "text", ['{"version": 1, "response": {"te', "[1, 2]", '{"version": 1, "response": {"txt": 1}}']
)
def test_a_row_damaged_on_disk_is_a_reported_miss_then_replaced(role, text, caplog):
    server, directory = role
    key = key_of_prompt("hello")
    writer = DiskStore(directory)  # written and damaged before this process's shared store opens it
    writer.set(key, {"version": 1, "response": {"text": "old answer"}})
    writer.close()
    damage_row(directory, key, text)
    with pytest.raises(DamagedCacheEntry):
        get_llm()("hello", cache="replay")
    with caplog.at_level(logging.WARNING, logger="myopto.cache"):
        assert get_llm()("hello").text == "echo: hello"
    assert get_llm()("hello").cached and server.request_count == 1
    assert len(damage_warnings(caplog)) == 1


def test_a_damaged_record_in_redis_does_not_hold_the_lease_back_and_is_replaced(server, redis_server, caplog):
    import redis as redis_py

    use_redis_cache(server, redis_server.url, model="m1")
    prompt = "a prompt only this test asks"  # the process-wide store's memory outlives a flushall
    record_key = f"myopto:cache:{{{key_of_prompt(prompt)}}}"
    client = redis_py.Redis.from_url(redis_server.url, decode_responses=True)
    client.set(record_key, '{"version": 1, "response": {"te')
    with caplog.at_level(logging.WARNING, logger="myopto.cache"):
        first = get_llm()(prompt)
    assert (first.text, first.cached) == (f"echo: {prompt}", False)
    assert f'"echo: {prompt}"' in client.get(record_key)  # replaced by the new answer
    assert len(damage_warnings(caplog)) == 1 and server.request_count == 1
    assert get_llm()(prompt).cached
