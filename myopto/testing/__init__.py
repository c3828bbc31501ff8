"""Test helpers for myopto and for code built on it: a real OpenAI-compatible server on loopback,
and an in-process backend that answers at once."""

from myopto.testing.echo import EchoBackend
from myopto.testing.server import FakeOpenAIServer, Fault, RecordedRequest, count_tokens, default_answer, example_for_schema

__all__ = [
    "EchoBackend",
    "FakeOpenAIServer",
    "Fault",
    "RecordedRequest",
    "count_tokens",
    "default_answer",
    "example_for_schema",
]
