"""Packaging: one package laid out as it is imported (``uwmbench/sweeps/stages.py`` is
``uwmbench.sweeps.stages``; no ``package-dir`` remap). A built wheel holds every module and the
package data; no folder of the repository root is importable as a second name; imports across
folders are absolute."""
from __future__ import annotations

import ast
import importlib.util
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
FOLDERS = ("methods", "benchmarks", "sweeps", "analysis", "configs")   # the subpackages of uwmbench/
DATA_SUFFIXES = (".yaml", ".csv", ".json", ".bddl", ".npz")


def _tracked_files() -> list[Path]:
    """Files of the package (tracked, or new and not ignored), relative to the repository root."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        files = [Path(p) for p in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): walk the package
        files = [p.relative_to(ROOT) for p in (ROOT / "uwmbench").rglob("*") if p.is_file()]
    return [p for p in files if p.parts and p.parts[0] == "uwmbench" and "__pycache__" not in p.parts
            and (ROOT / p).is_file()]


def _dotted(folder: Path) -> str:
    """``uwmbench/benchmarks/libero`` -> ``uwmbench.benchmarks.libero``."""
    return ".".join(folder.parts)


def test_no_remap_the_path_of_a_module_is_its_import_name():
    """pyproject finds the packages under uwmbench/ (nothing remapped), and every module of the
    package imports from the file at its dotted path: what editors and import linters read is what
    Python runs."""
    st = PYPROJECT["tool"]["setuptools"]
    assert "package-dir" not in st and st["packages"]["find"]["include"] == ["uwmbench", "uwmbench.*"]
    mods = [p for p in _tracked_files() if p.suffix == ".py" and p.name != "__main__.py"]
    assert len(mods) > 60
    for rel in mods:
        parts = rel.with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(spec.origin).resolve() == (ROOT / rel).resolve(), (name, spec)
    # the repository root holds no other package: `import methods` cannot load a second copy
    assert not [d.name for d in ROOT.iterdir() if d.is_dir() and (d / "__init__.py").is_file()
                and d.name not in ("uwmbench", "tests")]


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
            leaves = node.level > 1 or (depth == 1 and (node.module or "").split(".")[0] in FOLDERS)
            if leaves or node.level > depth:
                bad.append(f"{rel}:{node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
    assert not bad, "use absolute uwmbench.* imports across folders:\n" + "\n".join(bad)
