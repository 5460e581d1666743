"""The report's statistics (helper/stats.py) equal scipy's on given numbers: a mean's 95% interval,
Welch's difference, interval and t-test; no test below 3 runs a side; and the report prints them
against KD and against the student alone, and the rules best, last and val side by side."""
import math

import pytest
from scipy import stats as scipy_stats

from helper.stats import compare, describe, interval
from test_report import KD, call, make_run

A = [71.2, 72.9, 70.4, 73.1, 71.8]
B = [69.9, 70.3, 71.1]


def test_the_interval_of_a_mean_is_scipys():
    mean, std, n, low, high = interval(A)
    sem = scipy_stats.sem(A)
    assert (low, high) == pytest.approx(scipy_stats.t.interval(0.95, len(A) - 1, loc=mean, scale=sem), rel=1e-12)
    assert (n, std) == (5, pytest.approx(math.sqrt(scipy_stats.tvar(A)), rel=1e-12))
    assert interval([70.0])[3:] == (None, None)


def test_welchs_difference_and_test_are_scipys():
    c = compare(A, B)
    welch = scipy_stats.ttest_ind(A, B, equal_var=False)
    assert c["p"] == pytest.approx(welch.pvalue, rel=1e-12)
    assert c["df"] == pytest.approx(welch.df, rel=1e-12)
    low, high = welch.confidence_interval(0.95)
    assert (c["low"], c["high"]) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    assert c["diff"] == pytest.approx(sum(A) / 5 - sum(B) / 3, rel=1e-12)
    assert compare(A, B[:2]) is None and "no test (n < 3)" in describe(None, "KD")
    assert "within seed noise" in describe(compare([70.0, 71.0, 72.0], [70.5, 71.5, 72.5]), "KD")
    assert "distinguishable from seed noise" in describe(compare([80.0, 80.1, 80.2], [70.0, 70.1, 70.2]), "KD")


def test_the_report_compares_each_method_with_kd_and_prints_the_rules_side_by_side(tmp_path):
    vanilla = "train_vanilla/resnet8x4.yaml"
    for seed, acc in enumerate(A[:3]):
        make_run(tmp_path / f"kd{seed}", KD, [acc - 1, acc], extra=("seed", seed))
        make_run(tmp_path / f"ours{seed}", "kds/ours/resnet32x4_resnet8x4.yaml", [acc + 2, acc + 1],
                 extra=("seed", seed))
    for seed, acc in enumerate(B[:2]):
        make_run(tmp_path / f"alone{seed}", vanilla, [acc], extra=("seed", seed), kind="teacher")
    code, out = call([str(tmp_path), "--rule", "last", "--rules"])
    assert code == 0, out
    section = out.split("## Against KD and the student alone")[1].split("\n## ")[0]
    line = next(row for row in section.splitlines() if "| ASKD (ours) |" in row)
    expected = scipy_stats.ttest_ind([a + 1 for a in A[:3]], A[:3], equal_var=False)
    assert "vs KD: +1.00 [" in line and f"Welch p = {expected.pvalue:.3g}" in line, line
    assert "vs the student alone: no test (n < 3)" in line, line
    rules = out.split("## Rules side by side")[1]
    kd_row = next(row for row in rules.splitlines() if "| KD |" in row)
    assert kd_row.count(" (n=3") == 2 and kd_row.endswith("| - |"), kd_row  # best, last; no val_split: no val
