"""Beyond one process: grids of runs and multi-node runs on existing engines. SLURM schedules, submitit
submits (as MAE's, DINO's and ConvNeXt's cluster launchers do), and ddpm-bench decides what to run and keeps
the results folder consistent: ``claims`` (who trains which run folder), ``jobs`` (a run as a job that
survives preemption), ``executors`` (local processes or SLURM job arrays, and waiting for them) and
``status`` (``bench sweep status``)."""
