"""Reports across runs: ``bench compare``'s table (``compare``), its report folder and figures
(``compare_report``), the pytest-benchmark timings shown beside the runs (``benchmark_files``) and the text
of ``bench list`` (``listing``)."""
