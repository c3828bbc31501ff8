"""One worker of a fleet, run as its own process by the Redis tests.

argv[1] is a JSON spec: base_url, prompts, threads, role (extra set_role_config options) and
run ({"name": ..., "max_cost_usd": ...}, optional). Cache, Redis and limits settings come from
the environment, as they would on a real worker. Prints one JSON object: answers, whether each
was cached, errors (type: message) by prompt, and unrecorded (answers returned but not recorded,
by where: `myopto.recording.unrecorded_counts()`).
"""

import concurrent.futures
import contextlib
import contextvars
import json
import sys

import myopto
from myopto import get_llm, set_role_config
from myopto.recording import unrecorded_counts

spec = json.loads(sys.argv[1])
set_role_config(
    "executor",
    backend="CustomLLM",
    model=spec.get("model", "fleet-model"),
    base_url=spec["base_url"],
    api_key="sk-fleet-secret-key-0123456789",
    **spec.get("role", {}),
)
llm = get_llm()
answers, cached, errors = {}, {}, {}


def ask(prompt):
    try:
        response = llm(prompt)
    except myopto.MyoptoError as error:
        errors[prompt] = f"{type(error).__name__}: {error}"
        return
    answers[prompt] = response.text
    cached[prompt] = response.cached


run = spec.get("run")
with myopto.run(run["name"], max_cost_usd=run.get("max_cost_usd")) if run else contextlib.nullcontext():
    if spec.get("threads", 1) == 1:
        for prompt in spec["prompts"]:
            ask(prompt)
    else:  # each thread inside the run, as llm.batch does it
        with concurrent.futures.ThreadPoolExecutor(spec["threads"]) as pool:
            for future in [pool.submit(contextvars.copy_context().run, ask, prompt) for prompt in spec["prompts"]]:
                future.result()
print(json.dumps({"answers": answers, "cached": cached, "errors": errors, "unrecorded": unrecorded_counts()}))
