"""The evaluator, one file per job (the public entry point is :mod:`uwmbench.benchmarks.evaluate`):

- ``runner.py``          the runner interface a benchmark implements (:class:`~.runner.Runner`,
                         :class:`~.runner.RolloutEnv`), rollout jobs and seeds, one episode's loop
- ``libero_runner.py``   LIBERO behind that interface (tasks, init states, scenes, lazy rendering)
- ``pool.py``            serial and multi-process execution (the worker protocol, batched policy calls)
- ``policy.py``          the batched policy (a checkpoint or Method -> action chunks)
- ``reference.py``       expert demos read in the main process (start scenes, inverse-dynamics goals)
- ``core.py``            ``evaluate()``: checks, planning, resume, rows; ``summarize()``
- ``cli.py``             ``uwmbench evaluate``

Rows are :class:`uwmbench.rows.RolloutRow`; the output folder is :class:`uwmbench.run_dir.EvalDir`.
Nothing here is imported at package import: workers import only what they run.
"""
