"""uwmbench analysis."""

if __name__ != "uwmbench.analysis":  # e.g. `import analysis` with the repository root on sys.path
    raise ImportError("the folder `analysis` is the package `uwmbench.analysis`: import it as "
                      f"`import uwmbench.analysis` (it was imported as {__name__!r}, which would load a second "
                      "copy of its modules; install the repository with `pip install -e .`)")
