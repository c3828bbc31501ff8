"""One known price map whatever the import order (myopto/price_map.py).

trace-opt imports LiteLLM, which fetches its price map from the network unless told otherwise.
These tests run real processes against a real price server on 127.0.0.1 standing in for
LiteLLM's remote map: it serves the bundled map with gpt-4o-mini's prompt price raised tenfold,
and counts how often it is asked. myopto-first processes must never ask it; processes where
LiteLLM came first and loaded it must still get myopto costs from the bundled map.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from testkit import LoopbackHTTP, send_json

from myopto.pricing import price_map
from myopto.testing import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = price_map()["gpt-4o-mini"]


class PriceServer(LoopbackHTTP):
    """Serves a price map at /prices.json, as raw.githubusercontent.com serves LiteLLM's."""

    def __init__(self, prices: dict) -> None:
        body = json.dumps(prices).encode()
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                send_json(self, body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/prices.json"


@pytest.fixture(scope="module")
def remote_prices():
    """A 'remote' map that differs from the bundled one: gpt-4o-mini's prompt tokens cost 10x."""
    prices = json.loads(json.dumps(price_map()))
    prices["gpt-4o-mini"]["input_cost_per_token"] = BUNDLED["input_cost_per_token"] * 10
    server = PriceServer(prices)
    yield server
    server.close()


def environment(remote_prices, **extra: str) -> dict[str, str]:
    """The user's environment: no LITELLM_LOCAL_MODEL_COST_MAP, LiteLLM's map URL on our server."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "LITELLM_LOCAL_MODEL_COST_MAP" and not key.startswith(("TRACE_", "OPENAI_"))
    }
    env.update(LITELLM_MODEL_COST_MAP_URL=remote_prices.url, MYOPTO_CACHE="off", **extra)
    return env


def bundled_cost(prompt_tokens: int, completion_tokens: int) -> float:
    return prompt_tokens * BUNDLED["input_cost_per_token"] + completion_tokens * BUNDLED["output_cost_per_token"]


def run_python(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )


def test_the_trace_example_never_fetches_a_price_map(server, remote_prices, tmp_path):
    """examples/optimize_with_trace.py as a user runs it (gpt-4o-mini through LiteLLM when a key
    is set; OPENAI_BASE_URL points LiteLLM at the test server): no fetch, no LiteLLM warning."""
    before = len(remote_prices.hits)
    env = environment(remote_prices, OPENAI_API_KEY="sk-example", OPENAI_BASE_URL=server.url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "optimize_with_trace.py"), str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert len(remote_prices.hits) == before, "LiteLLM fetched its price map"
    assert "LiteLLM:WARNING" not in done.stderr and "cost map" not in done.stderr
    assert len([line for line in done.stdout.splitlines() if line.startswith("step ")]) == 3
    assert server.request_count == 3 and server.last_request.body["model"] == "gpt-4o-mini"


OPTO_FIRST = r"""
import json, sys
from opto.optimizers import OptoPrime  # imports LiteLLM before myopto: it loads the 'remote' map
import litellm
import myopto
from myopto.price_map import litellm_cost, litellm_loaded_bundled_map

url = sys.argv[1]
out = {"live_price": litellm.model_cost["gpt-4o-mini"]["input_cost_per_token"], "bundled": litellm_loaded_bundled_map()}
for backend, model in (("LiteLLM", "openai/gpt-4o-mini"), ("CustomLLM", "gpt-4o-mini")):
    myopto.set_role_config("optimizer", backend=backend, model=model, base_url=url, api_key="sk-x", retries=0)
    response = myopto.get_llm("optimizer")("one two three")
    out[backend] = [response.cost, response.usage.prompt_tokens, response.usage.completion_tokens]
raw = litellm.completion(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "one two three"}],
                         api_base=url, api_key="sk-x")
out["litellm_cost"] = [litellm_cost(litellm, raw, "openai/gpt-4o-mini"), raw.usage.prompt_tokens,
                       raw.usage.completion_tokens]
unknown = litellm.completion(model="openai/no-such-model-anywhere", messages=[{"role": "user", "content": "x"}],
                             api_base=url, api_key="sk-x")
out["unknown"] = litellm_cost(litellm, unknown, "openai/no-such-model-anywhere")
# an Azure-style deployment name is priced by the model that answered
out["deployment"] = litellm_cost(litellm, raw, "azure/my-deployment")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def opto_first(remote_prices):
    """One process that imports Trace's optimisers (so LiteLLM) first, then myopto."""
    before = len(remote_prices.hits)
    with FakeOpenAIServer() as server:
        done = run_python(OPTO_FIRST, environment(remote_prices), server.url)
    return json.loads(done.stdout.strip().splitlines()[-1]), len(remote_prices.hits) - before


def test_litellm_imported_first_really_loaded_the_other_map(opto_first):
    out, fetches = opto_first
    assert fetches == 1 and out["bundled"] is False
    assert out["live_price"] == pytest.approx(BUNDLED["input_cost_per_token"] * 10)


def test_litellm_cost_prices_from_the_bundled_map_when_litellm_loaded_another(opto_first):
    out, _ = opto_first
    cost, prompt, completion = out["litellm_cost"]
    assert cost == pytest.approx(bundled_cost(prompt, completion), rel=1e-9)
    assert out["unknown"] is None  # not in the bundled map: unknown, not free
    assert out["deployment"] == pytest.approx(cost, rel=1e-9)


def test_a_customllm_role_prices_from_the_bundled_map_when_litellm_came_first(opto_first):
    out, _ = opto_first
    cost, prompt, completion = out["CustomLLM"]
    assert cost == pytest.approx(bundled_cost(prompt, completion), rel=1e-9)


def test_a_litellm_role_prices_from_the_bundled_map_when_litellm_came_first(opto_first):
    out, _ = opto_first
    cost, prompt, completion = out["LiteLLM"]
    assert cost == pytest.approx(bundled_cost(prompt, completion), rel=1e-9)
    assert cost == pytest.approx(out["CustomLLM"][0], rel=1e-9)  # both backends agree


def test_importing_myopto_first_keeps_litellm_on_its_bundled_map_and_a_user_choice_wins(remote_prices):
    code = (
        "import os, myopto, litellm\n"
        "from myopto.price_map import litellm_loaded_bundled_map\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], litellm_loaded_bundled_map())"
    )
    before = len(remote_prices.hits)
    assert run_python(code, environment(remote_prices)).stdout.split() == ["True", "True"]
    assert len(remote_prices.hits) == before
    # a user who asks for LiteLLM's remote map gets it (myopto's own costs stay on the bundled one)
    chosen = run_python(code, environment(remote_prices, LITELLM_LOCAL_MODEL_COST_MAP="False"))
    assert chosen.stdout.split() == ["False", "False"]
    assert len(remote_prices.hits) == before + 1


def test_bundled_entry_follows_alias_rows_and_knows_provider_prefixes():
    from myopto.price_map import bundled_entry

    prices = price_map()
    alias, row = next((name, row) for name, row in prices.items() if isinstance(row, dict) and "alias_of" in row)
    assert bundled_entry(alias) is prices[row["alias_of"]]
    assert bundled_entry("openai/gpt-4o-mini") is prices["gpt-4o-mini"]
    assert bundled_entry("no-such-model-anywhere") is None
