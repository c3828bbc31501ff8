import asyncio

import pytest

from myopto import InvalidRequest, current_run, get_llm, get_usage_summary, run


def test_run_tags_calls_and_usage_per_run(custom_role):
    with run("exp-a", seed=1) as info:
        assert current_run() == info and dict(info.tags) == {"seed": 1}
        get_llm()("one")
        get_llm()("two")
    get_llm()("outside")
    assert current_run() is None
    summary = get_usage_summary()
    assert summary["by_run"]["exp-a"]["calls"] == 2
    only = get_usage_summary("exp-a")
    assert only["total"]["calls"] == 2 and only["run"] == "exp-a"
    assert get_usage_summary()["total"]["calls"] == 3


def test_runs_nest_and_merge_tags():
    with run("outer", a=1):
        with run("inner", b=2) as inner:
            assert inner.name == "inner" and dict(inner.tags) == {"a": 1, "b": 2}
        assert current_run().name == "outer"


def test_run_as_a_decorator(custom_role):
    @run("decorated")
    def experiment():
        return get_llm()("x")

    experiment()
    assert get_usage_summary("decorated")["total"]["calls"] == 1


async def test_asyncio_tasks_inherit_the_run(custom_role):
    with run("async-run"):
        await asyncio.gather(*(get_llm().acall(f"a{i}") for i in range(4)))
    assert get_usage_summary("async-run")["total"]["calls"] == 4


def test_batch_threads_inherit_the_run(custom_role):
    with run("batch-run"):
        get_llm().batch([f"b{i}" for i in range(5)], max_concurrency=3)
    assert get_usage_summary("batch-run")["total"]["calls"] == 5


def test_a_run_needs_a_name():
    with pytest.raises(InvalidRequest):
        run("")
