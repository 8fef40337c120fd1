"""Packaging: the top-level folders are installed as ``uwmbench.<folder>``. A built wheel holds
every subpackage and the package data; a folder imported under its bare name (``import methods``
with the repository root on sys.path) fails with a message; imports across folders are absolute."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]  # uwmbench.methods -> methods
FOLDERS = list(PACKAGE_DIR.values())
DATA_SUFFIXES = (".yaml", ".csv", ".json", ".bddl", ".npz")


def _tracked_files() -> list[Path]:
    """Files of the repository (tracked, or new and not ignored), relative to its root."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        files = [Path(p) for p in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): walk the folders
        files = [p.relative_to(ROOT) for d in FOLDERS for p in (ROOT / d).rglob("*") if p.is_file()]
    return [p for p in files if p.parts and p.parts[0] in FOLDERS and "__pycache__" not in p.parts
            and (ROOT / p).is_file()]


def _dotted(folder: Path) -> str:
    """``benchmarks/libero`` -> ``uwmbench.benchmarks.libero``."""
    top = {v: k for k, v in PACKAGE_DIR.items()}[folder.parts[0]]
    return ".".join([top, *folder.parts[1:]])


def _expected_packages(files: list[Path]) -> set[str]:
    """Every folder holding Python modules or package data, as a dotted package name."""
    return {_dotted(p.parent) for p in files if p.suffix == ".py" or p.suffix in DATA_SUFFIXES}


def test_every_folder_is_a_listed_package():
    """pyproject's explicit ``packages`` list (the folders are remapped, so setuptools' discovery
    cannot find them) names every folder with modules or data: a new subpackage must be added there."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    missing = _expected_packages(_tracked_files()) - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml (else a wheel drops them)"


def test_wheel_contains_every_subpackage_and_the_package_data(tmp_path):
    """Build a wheel offline from the repository's files and check its contents."""
    files = _tracked_files()
    src = tmp_path / "src"
    for rel in files + [Path("pyproject.toml"), Path("README.md")]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("uwmbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{_dotted(p.parent).replace('.', '/')}/{p.name}" for p in files
                if p.suffix == ".py" or p.suffix in DATA_SUFFIXES}
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}"
    # the subpackages (folders with an __init__.py) and the package data the commands read
    for pkg in ("uwmbench/methods", "uwmbench/benchmarks/libero", "uwmbench/benchmarks/evaluation", "uwmbench/sweeps",
                "uwmbench/analysis", "uwmbench/configs"):
        assert f"{pkg}/__init__.py" in names
    for data in ("uwmbench/configs/train.yaml", "uwmbench/configs/sweep/main.yaml", "uwmbench/configs/launcher/slurm.yaml",
                 "uwmbench/configs/data/libero90.yaml", "uwmbench/analysis/paper_numbers.csv"):
        assert data in names
    assert not any(n.startswith(("methods/", "benchmarks/", "sweeps/", "analysis/", "configs/", "tests/")) for n in names)


@pytest.mark.parametrize("folder", ["methods", "benchmarks", "sweeps", "analysis", "configs"])
def test_bare_folder_import_fails_with_a_message(folder, tmp_path):
    """``import methods`` with the repository root on sys.path would load a second copy (a second
    method registry); it fails and names the import to use."""
    proc = subprocess.run([sys.executable, "-c", f"import {folder}"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and f"import uwmbench.{folder}" in proc.stderr


def test_imports_across_folders_are_absolute():
    """``from ..methods.base import X`` hides the import graph: imports that leave their folder
    name ``uwmbench.*`` (relative imports stay inside their own folder)."""
    bad = []
    for rel in _tracked_files():
        if rel.suffix != ".py":
            continue
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            depth = len(rel.parts) - 1  # package depth of the module's folder below the repository root
            leaves = node.level > 1 or (rel.parts[0] == "uwmbench" and (node.module or "").split(".")[0] in FOLDERS)
            if leaves or node.level > depth:
                bad.append(f"{rel}:{node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
    assert not bad, "use absolute uwmbench.* imports across folders:\n" + "\n".join(bad)
