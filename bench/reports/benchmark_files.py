"""pytest-benchmark JSON files (``pytest tests/benchmarks --benchmark-json F``) found among the paths
``bench compare`` reads, as one table of step timings beside the runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..runs.run_folder import RUN_FILES


def is_benchmark_json(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("benchmarks"), list)


def find_benchmark_files(paths: list[Path]) -> list[Path]:
    files: set[Path] = set()
    for path in paths:
        candidates = [path] if path.is_file() else list(path.rglob("*.json")) if path.is_dir() else []
        files.update(p for p in candidates if p.name not in RUN_FILES and is_benchmark_json(p))
    return sorted(files)


def benchmark_table(files: list[Path]) -> pd.DataFrame:
    """The step timings of pytest-benchmark JSON files (``pytest tests/benchmarks --benchmark-json F``)."""
    rows = []
    for file in files:
        data = json.loads(file.read_text())
        machine = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "")
        for bench in data["benchmarks"]:
            info, st = bench.get("extra_info", {}), bench["stats"]
            rows.append(
                {
                    "file": file.name,
                    "group": bench.get("group"),
                    "case": bench.get("param") or bench["name"],
                    "device": info.get("device", machine),
                    "batch": info.get("batch"),
                    "median_ms": st["median"] * 1e3,
                    "iqr_ms": st.get("iqr", math.nan) * 1e3,
                    "images_per_s": info.get("images_per_s"),
                    "forward_gflops": (info.get("forward_flops_per_image") or math.nan) / 1e9,
                    "nfe": info.get("nfe"),
                    "ms_per_call": info.get("ms_per_call"),
                }
            )
    return pd.DataFrame(rows)
