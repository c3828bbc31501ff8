"""The checks `make test` runs before the suite (ruff, ruff format, mypy) catch what they are for.

Each test copies the source tree into a scratch folder, plants one mistake there, and runs the
same tool with the project's own configuration: the check must fail and name the mistake. The
real tree is never touched.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOURCES = ("myopto", "middleware", "backends", ".ci", "pyproject.toml")


@pytest.fixture
def scratch(tmp_path):
    """A copy of the source folders and pyproject.toml (no caches, no compiled files)."""
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, tmp_path / name)
    if (ROOT / ".mypy_cache").is_dir():  # `make check` ran first: start mypy warm (third-party modules)
        shutil.copytree(ROOT / ".mypy_cache", tmp_path / ".mypy_cache")
    return tmp_path


def run(tool, *arguments, cwd):
    done = subprocess.run([str(BIN / tool), *arguments], cwd=cwd, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def typecheck(scratch):
    """mypy as `make check` runs it (`.ci/typecheck`: the package laid out as it installs)."""
    done = subprocess.run(
        ["bash", str(scratch / ".ci" / "typecheck")],
        env={**os.environ, "MYPY": str(BIN / "mypy")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, done.stdout + done.stderr


def plant(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_ruff_fails_on_an_unused_import(scratch):
    assert run("ruff", "check", "myopto/params.py", cwd=scratch)[0] == 0  # the copy is clean before
    plant(scratch / "myopto" / "params.py", "\n\ndef _planted() -> None:\n    import os\n")
    code, output = run("ruff", "check", "myopto/params.py", cwd=scratch)
    assert code != 0 and "F401" in output and "params.py" in output


def test_ruff_format_fails_on_an_unformatted_line(scratch):
    plant(scratch / "myopto" / "params.py", "\n\nPLANTED = {'a':1}\n")
    code, output = run("ruff", "format", "--check", "myopto/params.py", cwd=scratch)
    assert code != 0 and "params.py" in output


def test_mypy_fails_on_a_wrong_annotation(scratch):
    plant(scratch / "myopto" / "params.py", '\n\ndef _planted() -> int:\n    return "not a number"\n')
    code, output = typecheck(scratch)
    assert code != 0 and "myopto/params.py" in output and "[return-value]" in output


def test_mypy_is_strict_here(scratch):
    """An unannotated function is an error under the project's settings, not only a wrong one."""
    plant(scratch / "backends" / "generation.py", "\n\ndef _planted(x):\n    return x\n")
    code, output = typecheck(scratch)
    assert code != 0 and "myopto/backends/generation.py" in output and "[no-untyped-def]" in output


def test_mypy_reads_backends_as_the_installed_package(scratch):
    """A wrong call across the package-dir mapping (myopto.backends -> backends/) is seen: the
    backends are typed, not Any."""
    plant(
        scratch / "myopto" / "params.py",
        "\n\ndef _planted() -> None:\n"
        "    from myopto.backends.generation import Generation\n\n"
        "    Generation(prompt_ids=1.5)\n",
    )
    code, output = typecheck(scratch)
    assert code != 0 and "myopto/params.py" in output and "[arg-type]" in output
