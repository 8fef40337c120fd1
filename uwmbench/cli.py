"""``uwmbench`` console command. Each subcommand lives in its own module and is imported
only when called, so ``uwmbench methods`` does not pay for LIBERO or SLURM imports.

Every subcommand that runs a config takes hydra overrides ``key=value`` after its options,
e.g. ``uwmbench train method=dp method.size=tiny trainer.steps=200``.

Bad input (a config key or value, a missing or malformed data file or checkpoint) ends the
command with one line on stderr, ``uwmbench <cmd>: config error: ...`` or ``uwmbench <cmd>:
data error: ...``, naming the key, file or value, and exit code 2. ``UWMBENCH_DEBUG=1`` shows
the traceback instead.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

# name -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "methods": ("uwmbench.benchmarks.methods_cli", "main", "list registered methods, capabilities and parameter counts"),
    "train": ("uwmbench.benchmarks.train", "main", "train a method on HDF5 demos (hydra config: train)"),
    "fit-vae": ("uwmbench.benchmarks.fit_vae", "main", "fit a small AutoencoderKL on a dataset's frames (offline latent encoder)"),
    "cache-latents": ("uwmbench.benchmarks.cache_latents", "main", "precompute the VAE latent cache of a dataset"),
    "tasks": ("uwmbench.benchmarks.libero.tasks_cli", "main", "list LIBERO tasks; show ID vs OOD ranges and objects"),
    "collect": ("uwmbench.benchmarks.libero.collect", "main", "scripted-expert demonstrations -> LIBERO-layout HDF5"),
    "corpus": ("uwmbench.benchmarks.libero.corpus", "main", "an offline corpus of a LIBERO suite: N scripted demos per task, official file names"),
    "replay-check": ("uwmbench.benchmarks.libero.replay_check", "main", "replay demos from their stored scenes; check evaluation scenes are reproducible"),
    "evaluate": ("uwmbench.benchmarks.evaluate", "main", "parallel LIBERO rollouts of a checkpoint, ID and OOD"),
    "diagnose": ("uwmbench.benchmarks.diagnose", "main", "why a trained policy fails: open-loop action error, evaluator vs training frames"),
    "modes": ("uwmbench.benchmarks.modes", "main", "every inference mode of a trained method (policy, forward/inverse dynamics, video prediction) on held-out windows, each beside a baseline"),
    "import-checkpoint": ("uwmbench.benchmarks.import_checkpoint", "main", "convert a public UWM/DP/PAD/GR1 models.pt (WEIRDLabUW/unified-world-model) into a checkpoint folder"),
    "run": ("uwmbench.sweeps.protocol", "main", "protocol run: pretrain -> finetune -> evaluate ID/OOD"),
    "sweep": ("uwmbench.sweeps.sweep", "main", "launch / inspect a sweep (main table, ablations) on SLURM or locally"),
    "tune": ("uwmbench.sweeps.tune", "main", "optuna hyperparameter study"),
    "report": ("uwmbench.analysis.report", "main", "tables, figures and an index page from a results store"),
    "quickstart": ("uwmbench.quickstart", "main", "small offline end-to-end run on CPU (demos -> train -> eval -> report)"),
    "perf": ("uwmbench.benchmarks.perf", "main", "speed benchmarks (perf eval | perf train)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: uwmbench <command> [options] [key=value ...]", "", "commands:"]
    lines += [f"  {n:<{width}}  {h}" for n, (_, _, h) in COMMANDS.items()]
    lines += ["", "Run `uwmbench <command> --help` for a command's options.",
              "Config and data errors print one line (exit code 2); UWMBENCH_DEBUG=1 shows their traceback."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("UWMBENCH_LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"uwmbench: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    mod, fn, _ = COMMANDS[name]
    try:
        func = getattr(importlib.import_module(mod), fn)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("uwmbench"):
            print(f"uwmbench: command {name!r} is not available in this build ({e})", file=sys.stderr)
            return 2
        raise
    from .config import ConfigError, error_message
    bad_input: tuple[type[Exception], ...] = (ConfigError,)
    try:
        from uwmbench.benchmarks.data_sources import DataError
        bad_input += (DataError,)
    except ModuleNotFoundError:  # a build without the benchmarks package
        DataError = None
    try:
        rc = func(rest)
    except bad_input as e:
        if _debug():
            raise
        kind = "data" if DataError is not None and isinstance(e, DataError) else "config"
        print(f"uwmbench {name}: {kind} error: {_one_line(error_message(e)) or type(e).__name__}", file=sys.stderr)
        return 2
    return int(rc or 0)


def _debug() -> bool:
    return os.environ.get("UWMBENCH_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line(msg: str) -> str:
    """A message on one line (multi-line ones, e.g. a config diff, are joined with ' | ')."""
    return " | ".join(ln.strip() for ln in msg.splitlines() if ln.strip())


if __name__ == "__main__":
    sys.exit(main())
