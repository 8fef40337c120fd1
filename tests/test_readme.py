"""Every command the README shows composes and checks as written (a typo in the README's own
keys fails here), and the strict config spine: typos fail at composition in every entry point
(`uwmbench <cmd>`, `sweep --dry-run`, `hydra -m`, `tune`) with the key named."""
from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from uwmbench.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_COMMANDS = {"train": "train", "run": "run", "evaluate": "evaluate", "tune": "tune", "fit-vae": "fit_vae",
                   "cache-latents": "cache_latents", "collect": "collect", "quickstart": "quickstart"}


DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[str]:
    """`uwmbench ...` command lines of the README and the docs pages it links (docs/*.md): code
    blocks (with `\\` continuations) and inline code spans; lines with placeholders (`...`, `<x>`,
    `a|b`) are left out."""
    text = "\n".join(p.read_text() for p in DOC_PAGES)
    cmds: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #", 1)[0].strip()
            m = re.search(r"(?:^|-m )(uwmbench\s.*)$", line)
            if m:
                cmds.append(m.group(1))
    for span in re.findall(r"`(uwmbench [^`]+)`", text):
        cmds.append(" ".join(span.split()))
    out = []
    for c in cmds:
        if "..." in c or "<" in c or re.search(r"\w\|\w", c) or "\\|" in c or "[--" in c:
            continue
        if any(re.fullmatch(r"[A-Z][A-Z_]+", t) for t in c.split()):  # FILE, NAME: placeholders
            continue
        if "mymethod" in c:  # the add-a-method steps: tests/test_add_a_method.py runs them with the plugin
            continue
        out.append(c.strip())
    return sorted(set(out))


@functools.lru_cache(maxsize=None)   # one interpreter start per subcommand, not per README line
def _help(*sub: str) -> str:
    r = subprocess.run([sys.executable, "-m", "uwmbench", *sub, "--help"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _check(cmd: str, tmp_path: Path) -> None:
    argv = shlex.split(cmd)[1:]
    sub, rest = argv[0], argv[1:]
    flags = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
    if flags and sub != "sweep":
        text = _help(*([sub, rest[0]] if sub == "perf" else [sub]))
        for f in flags:
            assert f in text, f"README uses {f} but `uwmbench {sub} --help` does not list it"
    if sub in CONFIG_COMMANDS:
        overrides = [a for a in rest if "=" in a and not a.startswith("-")]
        cfg = load_config(CONFIG_COMMANDS[sub], overrides)
        if sub == "run":
            from uwmbench.sweeps.protocol import _resolve, check_run
            check_run(_resolve(cfg), data=False)
        elif sub == "tune":
            from uwmbench.sweeps.tune import resolve
            resolve(cfg)
    elif sub == "sweep":
        from uwmbench.sweeps import sweep
        if not rest:  # the bare command lists the sweeps
            assert sweep.main(["--list"]) == 0
            return
        name = rest[0]
        ov = [a for a in rest[1:] if "=" in a]
        assert sweep.main([name, "--dry-run", "--skip-data-check", "--store", str(tmp_path / "store")] + ov) == 0
    elif sub == "corpus" or (sub == "tasks" and rest[:1] == ["coverage"]):   # key=value under a dataclass
        from uwmbench.benchmarks.libero.corpus import CorpusConfig
        from uwmbench.benchmarks.libero.coverage import CoverageConfig
        from uwmbench.config import typed_args
        schema, kv = (CorpusConfig, rest) if sub == "corpus" else (CoverageConfig, rest[1:])
        typed_args(kv, schema, cmd)
    elif sub in ("report", "import-checkpoint", "perf", "methods", "tasks", "replay-check", "diagnose",
                 "modes"):
        if not flags:  # commands without a config to compose: their --help works
            _help(sub)
    else:
        raise AssertionError(f"README command of an unknown subcommand: {cmd}")


def test_readme_has_commands_to_check():
    cmds = readme_commands()
    subs = {shlex.split(c)[1] for c in cmds}
    assert {"train", "run", "evaluate", "sweep", "collect"} <= subs, subs


@pytest.mark.parametrize("cmd", readme_commands())
def test_readme_command_composes_as_written(cmd, tmp_path):
    _check(cmd, tmp_path)


def test_readme_is_the_three_jobs_and_its_links_resolve():
    """The README stays the user's front door (the two commands and the three jobs, ~250 lines);
    every relative link of the README and the docs pages points at a file that exists."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250, "README.md grew past 250 lines: move details to docs/"
    for heading in ("## The two commands", "## Job 1: reproduce", "## Job 2: add a method", "## Job 3: comparison figures"):
        assert heading in text, heading
    for page in DOC_PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_readme_figure_snippet_runs(tmp_path, monkeypatch):
    """Job 3's Python snippet, exactly as written, on the committed competence store."""
    text = (ROOT / "README.md").read_text()
    job3 = text[text.index("## Job 3"):]
    code = re.search(r"```python\n(.*?)```", job3, flags=re.S).group(1)
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Job 3)", "exec"), {})
    assert (tmp_path / "id_vs_ood.png").stat().st_size > 0 and (tmp_path / "id_vs_ood.pdf").exists()


# ----------------------------------------------------------------------------- the strict spine
@pytest.mark.parametrize("name,override,named", [
    ("run", "method.num_registesr=8", "num_registesr"),
    ("run", "+method.num_registesr=8", "num_registesr"),
    ("run", "evaluate.workerz=2", "evaluate.workerz"),
    ("run", "finetune.trainer.steps=-5", "finetune.trainer.steps"),
    ("run", "method.num_registers=eight", "method.num_registers"),
    ("train", "trainer.lr=-1", "trainer.lr"),
    ("train", "data.val_fraction=2", "data.val_fraction"),
    ("evaluate", "n_rollout=5", "n_rollout"),
    ("evaluate", "workers=-1", "evaluate.workers"),
    ("tune", "train.trainer.stepz=5", "stepz"),
    ("tune", "sampler=grid", "sampler"),
])
def test_typos_and_bad_values_fail_at_composition(name, override, named):
    with pytest.raises(ConfigError) as e:
        load_config(name, [override])
    assert named in str(e.value)


def test_valid_keys_compose_everywhere():
    # keys that the yaml does not list still compose (the schema has them), no `+` needed
    cfg = load_config("run", ["method.num_registers=8", "method.conditioning=cross_attention", "evaluate.workers=3",
                              "finetune.trainer.ema=0.999", "data.latent_crops=1"])
    assert cfg.method.num_registers == 8 and cfg.evaluate.workers == 3
    cfg = load_config("tune", ["train.trainer.device=cpu", "train.trainer.warmup_steps=3"])
    assert cfg.train.trainer.device == "cpu"
    cfg = load_config("evaluate", ["method=bc", "method.size=tiny", "n_rollouts=1"])
    assert cfg.method.name == "bc" and cfg.checkpoint is None


def test_evaluate_and_run_share_one_evaluate_schema():
    import dataclasses

    from uwmbench.schemas import EvalOptions
    ev = load_config("evaluate", [])
    run = load_config("run", [])
    for f in dataclasses.fields(EvalOptions):
        assert ev[f.name] == run.evaluate[f.name], f.name  # no drifting default


def test_sweep_dry_run_rejects_typos_missing_data_and_bad_values(tmp_path, capsys):
    from uwmbench.sweeps import sweep
    store = ["--store", str(tmp_path / "s")]
    with pytest.raises(ConfigError, match="num_registesr"):
        sweep.main(["registers", "--dry-run", "method.num_registesr=8"] + store)
    with pytest.raises(ConfigError, match=r"no file matches /nonexistent"):
        sweep.main(["smoke", "--dry-run", "data_root=/nonexistent"] + store)
    with pytest.raises(ConfigError, match=r"finetune.trainer.steps=-5"):
        sweep.main(["smoke", "--dry-run", "--skip-data-check", "finetune.trainer.steps=-5"] + store)
    assert sweep.main(["registers", "--dry-run", "--skip-data-check", "method.num_registers=8"] + store) == 0
    # and through the console command: one line, exit code 2
    r = subprocess.run([sys.executable, "-m", "uwmbench", "sweep", "registers", "--dry-run", "method.num_registesr=8"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and "num_registesr" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_hydra_multirun_entry_point_uses_the_same_schema(tmp_path):
    """`python -m uwmbench.sweeps.hydra_run` (what `hydra -m` launches) composes with the same
    strict schema: a valid method key composes, a misspelt one fails before any job runs."""
    base = [sys.executable, "-m", "uwmbench.sweeps.hydra_run", f"hydra.run.dir={tmp_path / 'h'}"]
    ok = subprocess.run(base + ["method.num_registers=8", "--cfg", "job"], capture_output=True, text=True,
                        timeout=300, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "num_registers: 8" in ok.stdout
    bad = subprocess.run(base + ["-m", "method.num_registesr=8,16"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert bad.returncode != 0 and "num_registesr" in bad.stderr


def test_instance_capabilities_are_checked_before_training():
    """UWM without the future objective cannot do inverse dynamics: the run is refused at its
    check, not after training."""
    from uwmbench.sweeps.protocol import _resolve, check_run
    cfg = load_config("run", ["method.objective=none", "evaluate.modes=[policy,inverse_dynamics]", "tasks=[book_caddy]"])
    with pytest.raises(ConfigError, match="inverse_dynamics"):
        check_run(_resolve(cfg), data=False)
    check_run(_resolve(load_config("run", ["evaluate.modes=[policy,inverse_dynamics]", "tasks=[book_caddy]"])),
              data=False)


def test_importing_the_figures_module_leaves_the_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import uwmbench.analysis.figures, uwmbench.analysis.report; "
            "print(matplotlib.get_backend())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "svg", r.stderr


def test_diagnose_options_are_a_typed_schema():
    """`uwmbench diagnose` (key=value options, no hydra) checks its keys with the same schema rules."""
    for args, named in ((["checkpoint=x", "windowz=3"], "windowz"), (["checkpoint=x", "windows=abc"], "windows")):
        r = subprocess.run([sys.executable, "-m", "uwmbench", "diagnose", *args], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 2 and named in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
