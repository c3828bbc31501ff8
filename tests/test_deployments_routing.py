"""Routing a role's calls over its deployments: weighted (by weight or rpm), least-busy (in this
process, and across roles sharing their limits through a real redis-server), lowest latency and
plain order, each over real test servers."""

from __future__ import annotations

import random
import threading

import pytest

from myopto import get_llm, set_role_config
from myopto.cooldowns import LOCAL
from myopto.routing import Deployment, Weighted
from myopto.testing import FakeOpenAIServer


@pytest.fixture(autouse=True)
def no_cooldowns():
    LOCAL.reset()
    yield
    LOCAL.reset()


def deployment(server, name: str, **options):
    return {"name": name, "backend": "CustomLLM", "model": "m", "base_url": server.url, **options}


@pytest.mark.parametrize("by", ["weight", "rpm"])
def test_weighted_routing_splits_400_calls_3_to_1(by):
    share = {"weight": ({"weight": 3}, {"weight": 1}), "rpm": ({"rpm": 60000}, {"rpm": 20000})}[by]
    with FakeOpenAIServer() as heavy, FakeOpenAIServer() as light:
        set_role_config(
            "weighted",
            deployments=[deployment(heavy, "heavy", **share[0]), deployment(light, "light", **share[1])],
            routing="weighted",
            cache="off",
        )
        responses = get_llm("weighted").batch([f"question {i}" for i in range(400)], max_concurrency=8)
        counts = heavy.request_count, light.request_count
    assert all(not isinstance(response, BaseException) for response in responses)
    assert sum(counts) == 400
    assert 3 * 0.95 <= counts[0] / counts[1] <= 3 * 1.05
    assert [r.deployment for r in responses].count("heavy") == counts[0]


def test_fallback_order_sends_everything_to_the_first_deployment_while_it_answers():
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        set_role_config(
            "ordered",
            deployments=[deployment(first, "first"), deployment(second, "second")],
            routing="fallback-order",
            cache="off",
        )
        llm = get_llm("ordered")
        assert {llm(f"q{i}").deployment for i in range(10)} == {"first"}
        assert second.request_count == 0


def test_latency_routing_prefers_the_deployment_that_answers_sooner():
    with FakeOpenAIServer(latency=0.05) as slow, FakeOpenAIServer() as fast:
        set_role_config(
            "quick",
            deployments=[deployment(slow, "slow"), deployment(fast, "fast")],
            routing="latency",
            cache="off",
        )
        llm = get_llm("quick")
        answered = [llm(f"q{i}").deployment for i in range(30)]
    assert answered[:2] == ["slow", "fast"]  # each is measured once
    assert answered[2:] == ["fast"] * 28


class Held:
    """Requests held at the test servers until the test lets them go, so it can count each
    server's calls in flight at moments when nothing moves."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.held: dict[str, list[threading.Event]] = {}

    def responder(self, name: str):
        self.held[name] = []

        def respond(body):
            event = threading.Event()
            with self.changed:
                self.held[name].append(event)
                self.changed.notify_all()
            event.wait(60)
            with self.changed:
                self.held[name].remove(event)
                self.changed.notify_all()
            return "done"

        return respond

    def when_holding(self, total: int) -> dict[str, int]:
        """Once `total` requests are held and every released one is gone: how many each server holds."""

        def still() -> bool:
            events = [event for events in self.held.values() for event in events]
            return len(events) == total and not any(event.is_set() for event in events)

        with self.changed:
            assert self.changed.wait_for(still, timeout=60), "the callers stopped calling"
            return {name: len(events) for name, events in self.held.items()}

    def release(self, rng: random.Random, most: int) -> None:
        with self.changed:
            events = [event for events in self.held.values() for event in events]
            for event in rng.sample(events, rng.randint(1, most)):
                event.set()

    def release_all(self) -> None:
        with self.changed:
            for events in self.held.values():
                for event in events:
                    event.set()


@pytest.mark.parametrize("shared", [False, True], ids=["one-process", "through-redis"])
def test_least_busy_keeps_calls_in_flight_within_one_of_each_other_under_16_callers(shared, request):
    held = Held()
    servers = [FakeOpenAIServer(held.responder(name)).start() for name in ("a", "b", "c")]
    options = {"limits_url": request.getfixturevalue("redis_server").url} if shared else {}
    # through Redis: two roles (as two workers would) share one count of calls in flight
    roles = ["busy", "busy-too"] if shared else ["busy"]
    for role in roles:
        set_role_config(
            role,
            deployments=[deployment(server, name) for server, name in zip(servers, "abc", strict=True)],
            routing="least-busy",
            cache="off",
            **options,
        )
    stop = threading.Event()
    errors: list[BaseException] = []

    def caller(role: str) -> None:
        llm = get_llm(role)
        while not stop.is_set():
            try:
                llm("how busy?")
            except BaseException as error:  # noqa: BLE001 - handed to the test
                errors.append(error)
                return

    threads = [threading.Thread(target=caller, args=(roles[index % len(roles)],)) for index in range(16)]
    for thread in threads:
        thread.start()
    rng = random.Random(7)
    seen = []
    try:
        for _ in range(40):
            counts = held.when_holding(16)
            seen.append(counts)
            held.release(rng, most=5)
    finally:
        stop.set()
        held.release_all()
        for thread in threads:
            thread.join(timeout=60)
        for server in servers:
            server.stop()
    assert errors == []
    for counts in seen:
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert sum(server.request_count for server in servers) >= 16 + 40


def _deployments(*weights: float) -> tuple[Deployment, ...]:
    return tuple(
        Deployment(f"d{i}", f"k{i}", "CustomLLM", "m", None, weight, None, None, None)
        for i, weight in enumerate(weights)
    )


def _call_by_call(deployments, calls: int) -> list[str]:
    """The smooth weighted round robin worked out turn by turn, as the strategy does for a list."""
    current = {d.name: 0.0 for d in deployments}
    chosen = []
    for _ in range(calls):
        taking = [d for d in deployments if d.weight > 0]
        for d in taking:
            current[d.name] += d.weight
        best = max(taking, key=lambda d: current[d.name])  # the first of the most, as the strategy keeps
        current[best.name] -= sum(d.weight for d in taking)
        chosen.append(best.name)
    return chosen


@pytest.mark.parametrize("weights", [(3, 1), (60000, 20000), (5, 0, 2, 1), (1, 1, 1)])
def test_weighted_rounds_worked_out_once_take_the_same_turns_as_call_by_call(weights):
    group = _deployments(*weights)
    strategy = Weighted()
    taken = [strategy.choose(group).name for _ in range(40)]
    assert taken == _call_by_call(group, 40)
    assert strategy._rounds[id(group)][1] is not None  # read from the round, not worked out per call


def test_weighted_works_out_turns_call_by_call_for_fractional_weights_and_resting_deployments():
    fractional = _deployments(2.5, 1)
    strategy = Weighted()
    assert [strategy.choose(fractional).name for _ in range(14)] == _call_by_call(fractional, 14)
    assert strategy._rounds[id(fractional)][1] is None
    # a deployment resting: the others are passed as a list, and share the calls by their weights
    group = _deployments(3, 1, 1)
    resting = [group[0], group[2]]
    strategy = Weighted()
    assert [strategy.choose(resting).name for _ in range(8)].count("d0") == 6
    assert not strategy._rounds
