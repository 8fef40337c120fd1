"""uwmbench benchmarks."""

if __name__ != "uwmbench.benchmarks":  # e.g. `import benchmarks` with the repository root on sys.path
    raise ImportError("the folder `benchmarks` is the package `uwmbench.benchmarks`: import it as "
                      f"`import uwmbench.benchmarks` (it was imported as {__name__!r}, which would load a second "
                      "copy of its modules; install the repository with `pip install -e .`)")
