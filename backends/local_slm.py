"""`LocalSLM`: small language models run in-process with transformers or MLX.

The router knows this backend's name and options now; the implementation lands with the
local-models issue. Until then, building a chain on it raises `BackendUnavailable`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from myopto.backends.base import BaseBackend
from myopto.errors import BackendUnavailable
from myopto.request import Request
from myopto.response import Response


class LocalSLM(BaseBackend):
    """A local model via transformers (or MLX with `use_mlx=True`). Not implemented yet."""

    kind: ClassVar[str] = "LocalSLM"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"device", "torch_dtype", "use_mlx", "constrained", "trust_remote_code"}
    )
    default_model: ClassVar[str | None] = "Qwen/Qwen2-0.5B-Instruct"

    def __init__(self, **options: Any) -> None:
        raise BackendUnavailable(
            "the LocalSLM backend is not implemented in this version of myopto; "
            "use backend='LiteLLM' or 'CustomLLM' (an OpenAI-compatible server such as vLLM or "
            "llama.cpp serving the same model) until it lands"
        )

    def complete(self, request: Request) -> Response:  # pragma: no cover - unreachable until implemented
        raise BackendUnavailable("LocalSLM is not implemented")
