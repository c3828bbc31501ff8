"""Test helpers for myopto and for code built on it: a real OpenAI-compatible server on loopback,
a real redis-server process, and an in-process backend that answers at once."""

from myopto.testing.echo import EchoBackend
from myopto.testing.redis_server import RedisClusterServers, RedisServer, redis_server_binary
from myopto.testing.server import FakeOpenAIServer, Fault, RecordedRequest, count_tokens, default_answer, example_for_schema

__all__ = [
    "EchoBackend",
    "FakeOpenAIServer",
    "Fault",
    "RecordedRequest",
    "RedisClusterServers",
    "RedisServer",
    "count_tokens",
    "default_answer",
    "example_for_schema",
    "redis_server_binary",
]
