"""The statistics report.py writes beside each cell (scipy's): a mean's 95% confidence interval,
and whether a method's mean differs from another's by more than seed noise.

- interval: mean ± t(0.975, n - 1) s / sqrt(n), Student's t over the n runs (s their sample std).
- compare(a, b): the difference of the means, its 95% interval with Welch's standard error
  sqrt(s_a^2 / n_a + s_b^2 / n_b) and the Welch-Satterthwaite degrees of freedom, and the two-sided
  p-value of Welch's t-test (scipy.stats.ttest_ind, equal_var=False). With fewer than 3 runs on
  either side no test is made (seed noise cannot be told from two numbers).
"""
import math
import statistics

MIN_RUNS = 3  # runs on each side below which no test is made
LEVEL = 0.95


def interval(values, level=LEVEL):
    """(mean, sample std or None, n, low, high): low and high None below 2 runs."""
    from scipy import stats
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return mean, None, n, None, None
    std = statistics.stdev(values)
    half = stats.t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n)
    return mean, std, n, mean - half, mean + half


def compare(a, b, level=LEVEL):
    """{diff, low, high, p, df} of mean(a) - mean(b) by Welch's t-test, or None below MIN_RUNS runs
    on either side."""
    from scipy import stats
    if min(len(a), len(b)) < MIN_RUNS:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:  # identical runs on both sides: no spread to test against
        return {"diff": diff, "low": diff, "high": diff, "p": 1.0 if diff == 0 else 0.0, "df": float("nan")}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf((1 + level) / 2, df) * math.sqrt(va + vb)
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return {"diff": diff, "low": diff - half, "high": diff + half, "p": p, "df": df}


def describe(comparison, against):
    """One cell's text of `compare`'s result against the row `against`."""
    if comparison is None:
        return f"vs {against}: no test (n < {MIN_RUNS})"
    c = comparison
    verdict = "distinguishable from seed noise" if c["p"] < 1 - LEVEL else "within seed noise"
    return (f"vs {against}: {c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}], Welch p = {c['p']:.3g} "
            f"({verdict})")
