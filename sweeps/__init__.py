"""uwmbench sweeps."""

if __name__ != "uwmbench.sweeps":  # e.g. `import sweeps` with the repository root on sys.path
    raise ImportError("the folder `sweeps` is the package `uwmbench.sweeps`: import it as "
                      f"`import uwmbench.sweeps` (it was imported as {__name__!r}, which would load a second "
                      "copy of its modules; install the repository with `pip install -e .`)")
