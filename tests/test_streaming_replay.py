"""A streamed answer replays chunk for chunk, tool-call deltas, reasoning and usage included, in a
new process with the server gone: from the disk cache and from Redis."""

import json
import subprocess
import sys

import pytest
from testkit import use_cache, use_redis_cache

from myopto import get_llm
from myopto.testing import Answer, FakeOpenAIServer

CHILD = """
import json, sys
from myopto import get_llm, set_role_config
where = json.loads(sys.argv[1])
set_role_config("executor", backend="CustomLLM", model="m", base_url=where["url"], api_key="sk-x", retries=0,
                cache="replay", **where["store"])
stream = get_llm().stream([{"role": "user", "content": "weather?"}], tools=where["tools"])
chunks = [chunk.to_dict() for chunk in stream]
response = stream.response
print(json.dumps({"chunks": chunks, "cached": response.cached,
                  "choices": [choice.to_dict() for choice in response.choices],
                  "usage": response.usage.to_dict()}))
"""
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
ANSWER = Answer(
    content="Let me look.",
    reasoning_content="The user wants weather.",
    tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}],
    usage={"prompt_tokens": 40, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 32}},
)


def stream_then_replay_elsewhere(store_options, use):
    with FakeOpenAIServer() as server:
        use(server)
        server.reply(ANSWER)
        stream = get_llm().stream([{"role": "user", "content": "weather?"}], tools=TOOLS)
        live = [chunk.to_dict() for chunk in stream]
        response = stream.response
        url = server.url
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert any(chunk["choices"] and chunk["choices"][0]["delta"].get("tool_calls") for chunk in live)
    where = json.dumps({"url": url, "store": store_options, "tools": TOOLS})
    out = subprocess.run([sys.executable, "-c", CHILD, where], capture_output=True, text=True, timeout=120, check=True)
    replayed = json.loads(out.stdout.strip().splitlines()[-1])
    assert replayed["cached"] is True
    assert replayed["chunks"] == live  # the same chunks, in the same order
    assert replayed["choices"] == [choice.to_dict() for choice in response.choices]
    assert (
        replayed["usage"] == response.usage.to_dict()
        and replayed["usage"]["prompt_tokens_details"]["cached_tokens"] == 32
    )


def test_a_stream_replays_from_the_disk_cache_in_a_new_process_with_the_server_gone(tmp_path):
    folder = tmp_path / "cache"
    stream_then_replay_elsewhere({"cache_dir": str(folder)}, lambda server: use_cache(server, folder))


@pytest.mark.usefixtures("redis_server")
def test_a_stream_replays_from_redis_in_a_new_process_with_the_server_gone(redis_server):
    url = redis_server.url
    stream_then_replay_elsewhere({"cache_url": url}, lambda server: use_redis_cache(server, url))
