"""Test helpers for myopto and for code built on it: a real OpenAI-compatible server on loopback."""

from myopto.testing.server import FakeOpenAIServer, Fault, RecordedRequest, count_tokens, default_answer, example_for_schema

__all__ = ["FakeOpenAIServer", "Fault", "RecordedRequest", "count_tokens", "default_answer", "example_for_schema"]
