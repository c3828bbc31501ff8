"""DiskStore's own edges: a damaged directory is reported, never repaired by deleting."""

from __future__ import annotations

import pytest

from myopto import CacheUnavailable, get_llm, set_role_config
from myopto.stores.disk import DiskStore


def test_a_cache_db_that_is_not_a_database_is_a_clear_error_and_nothing_is_deleted(tmp_path, server, monkeypatch):
    directory = tmp_path / "cache"
    directory.mkdir()
    damaged = directory / "cache.db"
    damaged.write_bytes(b"these are my notes, not a database\n" * 100)
    (directory / "other-file.txt").write_text("keep me")
    with pytest.raises(CacheUnavailable) as error:
        DiskStore(directory)
    message = str(error.value)
    assert str(damaged) in message and "Nothing was deleted" in message and "MYOPTO_CACHE_DIR" in message
    assert error.value.location == str(directory)
    # through a role: refused when the chain is built, before anything is sent
    monkeypatch.setenv("MYOPTO_CACHE", "on")
    with pytest.raises(CacheUnavailable):
        set_role_config("executor", backend="CustomLLM", model="m", base_url=server.url, cache_dir=str(directory))
        get_llm()("hello")
    assert server.request_count == 0
    assert damaged.read_bytes() == b"these are my notes, not a database\n" * 100
    assert sorted(p.name for p in directory.iterdir()) == ["cache.db", "other-file.txt"]
