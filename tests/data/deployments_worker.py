"""One worker of a fleet whose role has deployments, run as its own process by
tests/test_deployments_fleet.py.

argv[1] is a JSON spec: name (the worker's), deployments (set_role_config's list), role (more
set_role_config options), stop (a path: the worker calls until that file exists, a minute at
most) and pause (seconds between calls). Limits and cache settings come from the environment, as
they would on a real worker. Prints one JSON object: calls (each [when it ended, the deployment
that answered]) and errors (type: message).
"""

import json
import os
import sys
import time

import myopto
from myopto import get_llm, set_role_config

spec = json.loads(sys.argv[1])
set_role_config("fleet", deployments=spec["deployments"], **spec.get("role", {}))
llm = get_llm("fleet")
calls, errors = [], []
index, started = 0, time.monotonic()
while not os.path.exists(spec["stop"]) and time.monotonic() - started < 60:
    try:
        response = llm(f"{spec['name']} call {index}")
        calls.append([time.time(), response.deployment])
    except myopto.MyoptoError as error:
        errors.append(f"{type(error).__name__}: {error}")
    index += 1
    time.sleep(spec.get("pause", 0.0))
print(json.dumps({"calls": calls, "errors": errors}))
