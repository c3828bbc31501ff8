"""Workload 6 and the tool-call workload: the local-model scripts, each run in a process of its
own (so peak memory is that model's), a new process's first answer against raw transformers, and
the local patterns users run against their anchors (`local_patterns.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from stats import Row, ratio_to

HERE = Path(__file__).resolve().parent


def local_models(quick: bool) -> list[Row]:
    rows = []
    models = ["smollm2", "qwen2-0.5b-arch"]
    for name in models:
        out = subprocess.run(
            [sys.executable, str(HERE / "local_model.py"), name, *(["--quick"] if quick else [])],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for row in json.loads(out.strip().splitlines()[-1]):
            rows.append(Row(**row))
    return rows


RAW_GGUF_LOAD = """
import time; start = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from myopto.backends.model_files import embedded_gguf
gguf = embedded_gguf()
AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
print(time.perf_counter() - start)
"""
FIRST_ANSWER = """
import time; start = time.perf_counter()
from myopto import get_llm, set_role_config
from myopto.backends.model_files import EMBEDDED_MODEL
set_role_config("b", backend="LocalSLM", model=EMBEDDED_MODEL, cache="off", engine=ENGINE)
get_llm("b")("What is the capital of France?", max_tokens=8)
print(time.perf_counter() - start)
"""


def reload_time(repeats: int) -> list[Row]:
    """A new process's first answer on the embedded GGUF (its converted copy kept by an earlier
    process) against raw transformers loading the same GGUF; imports counted on both sides."""
    from myopto.backends.model_files import embedded_gguf

    if embedded_gguf() is None:
        return []
    env = {**os.environ, "MYOPTO_MODEL_DIR": tempfile.mkdtemp(prefix="myopto-models-")}

    def seconds(code: str) -> float:
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout
        return float(out.strip().splitlines()[-1])

    transformers = FIRST_ANSWER.replace("ENGINE", repr("transformers"))
    llama = FIRST_ANSWER.replace("ENGINE", repr("llama.cpp"))
    seconds(transformers)  # the first process converts and keeps the copy
    raw, converted, gguf = [], [], []
    for _ in range(max(2, repeats // 2)):
        raw.append(seconds(RAW_GGUF_LOAD))
        converted.append(seconds(transformers))
        gguf.append(seconds(llama))
    label = "6 local, first answer: smollm2"
    anchor = Row(label, "raw transformers: load the GGUF in a new process", raw, "s")
    rows = [
        anchor,
        Row(
            label, "LocalSLM transformers: first answer in a new process (converted copy)", converted, "s", goal="≤ 0.3"
        ),
        Row(label, "LocalSLM llama.cpp: first answer in a new process", gguf, "s", goal="≤ 0.3"),
    ]
    for row in rows[1:]:
        ratio_to(row, anchor)
    return rows


def subprocess_rows(script: str, quick: bool, *arguments: str) -> list[Row]:
    """The rows a workload script run in its own process prints on its last line."""
    out = subprocess.run(
        [sys.executable, str(HERE / script), *arguments, *(["--quick"] if quick else [])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [Row(**row) for row in json.loads(out.strip().splitlines()[-1])]


def local_patterns(quick: bool) -> list[Row]:
    """The local patterns of `local_patterns.py`, llama.cpp's and transformers' each in a process of its own."""
    return subprocess_rows("local_patterns.py", quick, "llama") + subprocess_rows(
        "local_patterns.py", quick, "transformers"
    )
