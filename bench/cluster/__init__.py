"""Beyond one process: grids of runs and multi-node runs on existing engines. SLURM schedules, submitit
submits (as MAE's, DINO's and ConvNeXt's cluster launchers do), and ddpm-bench decides what to run and keeps
the results folder consistent: ``sweep`` (a grid of runs under one budget, its plan and its report),
``jobs`` (a run as a job that survives preemption), ``executors`` (local processes or SLURM job arrays, and
waiting for them) and ``status`` (``bench sweep status``). Who trains which run folder is the run folder's
own business (:mod:`bench.runs.claims`), shared by every way a run is started."""
