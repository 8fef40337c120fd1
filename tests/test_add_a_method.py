"""The README's "Adding a method", end to end, exactly as written: its module (taken from the
README) in a temporary package named by UWMBENCH_PLUGINS -> `uwmbench methods` -> the contract
suite -> `uwmbench train` -> `uwmbench run` (finetune + rollouts in LIBERO) -> its own row in
`uwmbench report`; and a module dropped into `uwmbench/methods/` is registered without being listed."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from libero_files import write_libero_hdf5

ROOT = Path(__file__).resolve().parents[1]


def readme_module() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Job 2: add a method"):]
    section = section[:section.index("\n## ", 3)]
    m = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert m, "the README's 'Job 2: add a method' has no python block"
    lines = m.group(1).splitlines()
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    return "\n".join(ln[indent:] for ln in lines) + "\n"


def _sh(args, env, cwd, timeout=600):
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert r.returncode == 0, f"{args}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.libero
def test_readme_add_a_method_end_to_end(tmp_path):
    pkg = tmp_path / "plugins" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    code = readme_module()
    assert code.startswith("# mypkg/mymethod.py")
    (pkg / "mymethod.py").write_text(code)
    env = {**os.environ, "UWMBENCH_PLUGINS": "mypkg.mymethod", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    uwm = [sys.executable, "-m", "uwmbench"]

    # 2. registered and listed
    out = _sh(uwm + ["methods", "--size", "tiny"], env, tmp_path)
    assert "mymethod" in out

    # 3. the contract suite picks it up
    out = _sh([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_contract.py"),
               "-k", "mymethod"], env, ROOT)
    assert re.search(r"(\d+) passed", out) and int(re.search(r"(\d+) passed", out).group(1)) >= 6, out

    # 4. train, run (finetune + rollouts) and report, with `method=mymethod` and its own config key
    data = write_libero_hdf5(tmp_path / "book_caddy.hdf5", n_demos=3, length=40, size=32)
    _sh(uwm + ["train", "method=mymethod", "method.size=tiny", "method.feature_dim=16",
               f"data.sources=[{{path:'{data}'}}]", "trainer.steps=3", "trainer.batch_size=4", "trainer.val_every=0",
               "trainer.progress=false", "data.latent_cache=false", f"run_dir={tmp_path / 'train'}"], env, tmp_path)
    assert list((tmp_path / "train" / "checkpoints").glob("step_*"))
    bad = subprocess.run(uwm + ["train", "method=mymethod", "method.feature_dimm=16"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "feature_dimm" in bad.stderr
    _sh(uwm + ["run", "method=mymethod", "method.size=tiny", "tasks=[book_caddy]", "pretrain.enabled=false",
               f"finetune.sources=[{{path:'{tmp_path}/{{task}}.hdf5',kind:hdf5}}]", "finetune.trainer.steps=3",
               "finetune.trainer.batch_size=4", "finetune.trainer.warmup_steps=0", "finetune.trainer.val_every=0",
               "finetune.trainer.progress=false", "data.latent_cache=false", "evaluate.n_rollouts=1",
               "evaluate.conditions=[id]", "evaluate.max_steps=16", "evaluate.workers=0", "evaluate.diagnose_windows=0",
               "sweep_name=main", "run_id=mine", f"runs_root={tmp_path / 'runs'}", f"store={tmp_path / 'store'}"],
        env, tmp_path)
    _sh(uwm + ["report", str(tmp_path / "store"), "--out", str(tmp_path / "report")], env, tmp_path)
    tables = "\n".join(p.read_text() for p in (tmp_path / "report").rglob("*.md"))
    assert re.search(r"^\|\s*mymethod\b", tables, flags=re.M) or "| mymethod |" in tables, tables[:2000]


def test_a_module_in_methods_is_registered_without_a_list(tmp_path):
    """A new file in the methods package registers itself (no hidden list of built-ins): the
    package's folder list is extended by a temporary folder, which is what a new file in
    uwmbench/methods/ amounts to."""
    extra = tmp_path / "more_methods"
    extra.mkdir()
    (extra / "zz_probe.py").write_text(readme_module().replace('name = "mymethod"', 'name = "zz_probe"'))
    code = (f"import uwmbench.methods as m; m.__path__.append({str(extra)!r}); "
            "print(sorted(m.registered_methods()), m.get_method_class('zz_probe').__module__)")
    out = _sh([sys.executable, "-c", code], {**os.environ}, tmp_path)
    assert "'zz_probe'" in out and "uwmbench.methods.zz_probe" in out
