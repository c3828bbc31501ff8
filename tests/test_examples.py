"""The examples run as a user would run them, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACE_", "OPENAI_"))}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, env=env, timeout=300, check=True).stdout


def test_quickstart_runs_an_experiment_through_the_roles():
    out = run_example("quickstart.py")
    assert "No OPENAI_API_KEY: using myopto's test server" in out
    assert "Hello! -> echo: Hello!" in out
    assert "llm_json -> {'name': 'example', 'age': 1}" in out
    assert "total: 5 calls" in out


def test_custom_middleware_example_touches_one_role_only():
    out = run_example("custom_middleware.py")
    assert "2. prefix_for_optimizer" in out
    assert "optimizer's request as the server saw it: [{'role': 'system', 'content': 'Be concise." in out
    assert "executor's request as the server saw it: [{'role': 'user', 'content': 'Solve the task.'}]" in out
    assert "executor calls counted: 1" in out
