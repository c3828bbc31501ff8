"""Test helpers for myopto and for code built on it: a real OpenAI-compatible server on loopback
(`Answer` arranges tool calls, reasoning and usage; `logprobs_for` says the logprobs it sends),
a real redis-server process, and an in-process backend that answers at once."""

from myopto.testing.answers import Answer, count_tokens, default_answer, example_for_schema, logprobs_for
from myopto.testing.echo import EchoBackend
from myopto.testing.faults import Fault
from myopto.testing.redis_server import RedisClusterServers, RedisServer, redis_server_binary
from myopto.testing.server import FakeOpenAIServer, RecordedRequest

__all__ = [
    "Answer",
    "EchoBackend",
    "FakeOpenAIServer",
    "Fault",
    "RecordedRequest",
    "RedisClusterServers",
    "RedisServer",
    "count_tokens",
    "default_answer",
    "example_for_schema",
    "logprobs_for",
    "redis_server_binary",
]
