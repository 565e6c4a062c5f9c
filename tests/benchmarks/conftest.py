"""Step timings are benchmarks, not tests: they are collected only when asked for, so the default
`pytest` run never depends on how busy the machine is.

    pytest tests/benchmarks --benchmark-only
    pytest tests/benchmarks --benchmark-only --benchmark-json results/bench-<name>.json
"""

import pytest


def pytest_collection_modifyitems(config, items):
    asked = config.getoption("benchmark_only") or config.getoption("benchmark_json")
    if asked:
        return
    skip = pytest.mark.skip(reason="timings run with `pytest tests/benchmarks --benchmark-only`")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
