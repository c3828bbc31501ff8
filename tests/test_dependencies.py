"""Every third-party package the code imports is declared in pyproject.toml (core or an extra)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib
from testkit import modules_loaded_by

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("myopto", "middleware", "backends")


def imported_top_level_modules() -> dict[str, str]:
    """Top-level module -> one file importing it, over every module of the package."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    return {
        re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-") for requirement in requirements
    }


def test_every_third_party_import_is_declared():
    ours = {"myopto", "middleware", "backends"}
    distributions = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    missing = {}
    for module, where in imported_top_level_modules().items():
        if module in ours or module in sys.stdlib_module_names or module == "__future__":
            continue
        names = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = where
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"


def test_rich_and_tqdm_are_declared_because_the_cli_and_batch_import_them():
    imported = imported_top_level_modules()
    assert {"rich", "tqdm"} <= set(imported) and {"rich", "tqdm"} <= declared_distributions()


def test_import_myopto_stays_light_with_every_export():
    """Every name myopto exports (the Response's parts included) comes without an SDK, a
    validator or a tracer: those load on first use."""
    heavy = {"litellm", "openai", "jsonschema", "opentelemetry", "redis", "numpy", "torch", "transformers", "pydantic"}
    assert modules_loaded_by("import myopto\n[getattr(myopto, name) for name in myopto.__all__]", heavy) == []
