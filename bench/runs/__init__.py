"""A run's life: its config resolved to objects (``experiment``), ``bench run``'s orchestration (``run``),
resuming or skipping a run folder (``resume``), ``bench sample`` and ``bench eval`` of a finished run
(``resample``, ``fid_samples``), the run folder and who holds it (``run_folder``, ``claims``), what a run
measured and cost (``measure``, ``cost``), the teacher a student learns from (``teacher``), its row of
design columns and scores (``row``), the table it ends with (``run_summary``) and its TensorBoard files
(``tensorboard_log``)."""
