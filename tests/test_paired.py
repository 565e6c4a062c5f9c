"""Paired differences between designs that share seeds, against numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.reports.paired import BETTER, UNRESOLVED, WORSE, paired_difference, versus_best

T_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


def test_a_paired_difference_by_hand():
    """a = 10, 12, 14 and b = 9, 10, 13 on seeds 0, 1, 2: differences 1, 2, 1, mean 4/3, sd sqrt(1/3), so
    the half-width is t(0.975, 2) sqrt(1/3) / sqrt(3) = t / 3 = 1.434: the interval [-0.10, 2.77] holds
    zero, although a's mean (12) is above b's (10.67) in every seed."""
    d = paired_difference({0: 10.0, 1: 12.0, 2: 14.0}, {0: 9.0, 1: 10.0, 2: 13.0})
    assert d.mean == pytest.approx(4 / 3)
    assert d.half_width == pytest.approx(T_975_2 / 3)
    assert d.seeds == (0, 1, 2)
    assert not d.resolved and d.reading() == UNRESOLVED


def test_a_constant_difference_is_resolved_and_the_sign_gives_the_order():
    d = paired_difference({0: 10.0, 1: 12.0, 2: 14.0}, {0: 8.0, 1: 10.0, 2: 12.0})
    assert (d.mean, d.half_width) == (2.0, 0.0)
    assert d.resolved and d.reading() == WORSE and d.reading(lower_is_better=False) == BETTER
    assert paired_difference({0: 8.0, 1: 10.0, 2: 9.0}, {0: 10.0, 1: 12.0, 2: 11.0}).reading() == BETTER


def test_only_shared_seeds_are_paired_and_one_seed_resolves_nothing():
    d = paired_difference({0: 1.0, 1: 5.0, 2: 7.0}, {1: 4.0, 2: 4.0, 3: 0.0})
    assert d.seeds == (1, 2) and d.mean == pytest.approx(2.0)
    assert d.half_width == pytest.approx(12.706204736174707)  # differences 1, 3: sd sqrt 2, se 1, t(0.975, 1)
    one = paired_difference({0: 1.0}, {0: 5.0})
    assert math.isnan(one.half_width) and not one.resolved and one.reading() == UNRESOLVED
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_versus_best_states_an_order_only_where_the_interval_excludes_zero():
    rows = [
        *({"design": "a", "seed": s, "value": v} for s, v in zip((0, 1, 2), (10.0, 12.0, 14.0), strict=True)),
        *({"design": "b", "seed": s, "value": v} for s, v in zip((0, 1, 2), (9.0, 10.0, 13.0), strict=True)),
        *({"design": "c", "seed": s, "value": v} for s, v in zip((0, 1, 2), (12.0, 14.0, 16.0), strict=True)),
    ]
    table = versus_best(pd.DataFrame(rows)).set_index("design")
    assert table.loc["b", "paired difference to the best"] == "(the best)"
    assert table.loc["a", "paired difference to the best"] == "+1.3 ± 1.4"
    assert table.loc["a", "reading"] == UNRESOLVED
    assert table.loc["c", "paired difference to the best"] == "+3.3 ± 1.4"
    assert table.loc["c", "reading"] == "worse than b"
    assert table.loc["b", "mean"] == "10.7 ± 5.2" and table.loc["b", "seeds"] == 3
    assert not any("better" in r for r in table["reading"])


def test_versus_best_refuses_two_values_for_one_seed():
    rows = [{"design": "a", "seed": 0, "value": 1.0}, {"design": "a", "seed": 0, "value": 2.0}]
    with pytest.raises(ValueError, match="one value per design and seed"):
        versus_best(pd.DataFrame(rows))


def test_bench_compare_paired_sets_each_design_against_the_best(tmp_path):
    """Two designs over three seeds: transformer's FD is unet's + 2 in every seed (resolved, worse), though
    the seeds spread each design's own interval over +-5."""
    from tests.helpers import invoke
    from tests.test_compare import make_run

    for seed, fd in zip((0, 1, 2), (20.0, 24.0, 28.0), strict=True):
        make_run(tmp_path / "runs", f"unet-s{seed}", "unet", seed, fd)
        make_run(tmp_path / "runs", f"transformer-s{seed}", "transformer", seed, fd + 2.0)
    result = invoke("compare", str(tmp_path / "runs"), "--paired", "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert "paired over the seeds they share" in result.output
    table = pd.read_csv(tmp_path / "report" / "paired.csv").set_index("design")
    assert table.loc["transformer", "paired difference to the best"] == "+2.0 ± 0.0"
    assert table.loc["transformer", "reading"] == "worse than unet"
    assert table.loc["unet", "mean"] == "24.0 ± 9.9"
    bad = invoke(
        "compare", str(tmp_path / "runs"), "--paired", "--metric", "nonsense", "--out", str(tmp_path / "r2")
    )
    assert bad.exit_code == 2 and "no measurement 'nonsense' to pair" in bad.output
    assert not (tmp_path / "r2").exists()
