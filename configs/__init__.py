if __name__ != "uwmbench.configs":  # e.g. `import configs` with the repository root on sys.path
    raise ImportError("the folder `configs` is the package `uwmbench.configs`: import it as "
                      f"`import uwmbench.configs` (it was imported as {__name__!r}, which would load a second "
                      "copy of its modules; install the repository with `pip install -e .`)")
