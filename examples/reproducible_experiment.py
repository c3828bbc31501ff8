"""A cached, reproducible experiment: run it, rerun it for free, replay it offline, export it.

The model here is myopto's test server (so the example runs anywhere); point the role at any
backend and the cache behaves the same.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from myopto import CacheMiss
from myopto.cache_transfer import export_records
from myopto.stores.disk import disk_store
from myopto.testing import FakeOpenAIServer
from myopto.utils import get_llm, set_role_config

PROMPTS = [f"Propose variant {i} of the prompt." for i in range(5)]


def experiment() -> list[str]:
    llm = get_llm("optimizer")
    answers = [llm(prompt, temperature=0, metadata={"run": "exp-42"}).text for prompt in PROMPTS]
    # Three distinct samples of one prompt at temperature 1, each cached under its own key.
    answers += [llm(PROMPTS[0], temperature=1.0, sample=n, metadata={"run": "exp-42"}).text for n in range(3)]
    return answers


def main(directory: Path) -> None:
    server = FakeOpenAIServer().start()
    set_role_config(
        "optimizer", backend="CustomLLM", model="opt", base_url=server.url, cache="on", cache_dir=str(directory)
    )

    first = experiment()
    print(f"run 1: {server.request_count} calls reached the server")
    calls = server.request_count
    again = experiment()
    print(f"run 2: {server.request_count - calls} calls reached the server, same answers: {again == first}")

    server.stop()  # offline from here on
    set_role_config("optimizer", cache="replay")
    replayed = experiment()
    print(f"replay with the server stopped: same answers: {replayed == first}")
    try:
        get_llm("optimizer")("A prompt nobody asked before.")
    except CacheMiss as error:
        print(f"replay of an unrecorded call: CacheMiss ({str(error)[:60]}...)")

    export = directory / "exp-42.jsonl"
    with open(export, "w", encoding="utf-8") as out:
        count = export_records(disk_store(directory), out, run="exp-42")
    print(f"exported {count} calls of run exp-42 to {export.name} (myopto cache import FILE on another machine)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="myopto-exp-")))
