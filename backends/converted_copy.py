"""`ConvertedCopy`: a GGUF file, as transformers loads it, kept as safetensors for fast reloads.

transformers reads a GGUF file by de-quantizing every tensor, which takes seconds to minutes in
every new process (~15 s for the embedded SmolLM2 on 2 cores). The first load writes what it
produced (the weights as safetensors, the config, the generation config and the tokenizer)
into `<model cache>/<sha256 of the file>-transformers-<version>`; later processes load that
folder instead. The copy is written into a temporary folder and renamed into place in one
step, with a manifest of file sizes written last, so a copy is either whole or absent; one
that is damaged anyway (sizes off, or transformers cannot load it) is removed and rebuilt,
never used. (`save_pretrained` refuses a GGUF-loaded model, hence the state dict.)
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .model_files import file_sha256  # remembered per file version: the cache key hashed it already

_MANIFEST = "myopto-converted.json"
_log = logging.getLogger("myopto.local")


class ConvertedCopy:
    """Where the converted copy of one GGUF file lives, and whether it is whole."""

    def __init__(self, gguf: Path, root: Path) -> None:
        import transformers

        self.gguf = gguf
        self.sha256 = file_sha256(gguf)
        self.transformers_version = transformers.__version__
        self.folder = root / f"{self.sha256[:32]}-transformers-{self.transformers_version}"

    def ready(self) -> bool:
        """True when the copy is whole: its manifest is there and every file has its size."""
        try:
            manifest = json.loads((self.folder / _MANIFEST).read_text())
            files = manifest["files"]
            return (
                manifest["sha256"] == self.sha256
                and bool(files)
                and all((self.folder / name).stat().st_size == size for name, size in files.items())
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def discard(self) -> None:
        """Remove a damaged copy (our own cache files, never the user's GGUF)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def write(self, model: Any, tokenizer: Any) -> None:
        """Save the loaded model and tokenizer as the copy, atomically (best effort: a failure is
        logged and the next process converts again)."""
        from safetensors.torch import save_model

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=self.folder.parent))
        try:
            save_model(model, str(staging / "model.safetensors"))  # drops tied duplicates; loading re-ties
            model.config.save_pretrained(staging)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            files = {path.name: path.stat().st_size for path in staging.iterdir() if path.is_file()}
            manifest = {
                "gguf": self.gguf.name,
                "sha256": self.sha256,
                "transformers": self.transformers_version,
                "files": files,
            }
            (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            if self.folder.exists():
                self.discard()
            staging.rename(self.folder)
        except OSError as error:
            _log.warning("could not keep a converted copy of %s in %s: %s", self.gguf.name, self.folder.parent, error)
            shutil.rmtree(staging, ignore_errors=True)
