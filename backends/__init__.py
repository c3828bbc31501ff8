"""Backends: the terminals of myopto's chains, one per module, loaded by name on first use.

Importing this package imports no SDK; each backend imports its own heavy dependencies
(litellm, openai, torch, transformers, mlx) when it first runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from myopto.errors import ConfigError

# Canonical name -> "module:class". Keys of ALIASES are compared case-insensitively.
BACKENDS: dict[str, str] = {
    "LiteLLM": "myopto.backends.lite_llm:LiteLLM",
    "CustomLLM": "myopto.backends.custom_llm:CustomLLM",
    "LocalSLM": "myopto.backends.local_slm:LocalSLM",
}
ALIASES: dict[str, str] = {
    "litellm": "LiteLLM",
    "customllm": "CustomLLM",
    "custom": "CustomLLM",
    "openai": "CustomLLM",
    "openai-compatible": "CustomLLM",
    "localslm": "LocalSLM",
    "local": "LocalSLM",
}


def canonical_backend_name(name: str) -> str:
    """The canonical spelling of a backend name; `ConfigError` listing the known ones if unknown."""
    if not isinstance(name, str):
        raise ConfigError(f"backend must be a string such as 'LiteLLM', got {type(name).__name__}")
    canonical = ALIASES.get(name.strip().lower())
    if canonical is None:
        raise ConfigError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return canonical


def backend_class(name: str) -> Any:
    """The backend class for a (case-insensitive) name or alias."""
    module_name, _, class_name = BACKENDS[canonical_backend_name(name)].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["BACKENDS", "backend_class", "canonical_backend_name"]
