"""cimnas.stats against NumPy / SciPy references."""

import numpy as np
import pytest
from scipy import stats as st

from cimnas.errors import CimnasError
from cimnas.stats import combination_ci, diff_ci, mean_ci, summarize


def test_summarize_matches_numpy() -> None:
    x = np.random.default_rng(0).normal(0.8, 0.05, 37)
    s = summarize(x)
    assert s["n"] == 37
    assert s["mean"] == pytest.approx(x.mean())
    assert s["std"] == pytest.approx(x.std(ddof=1))
    assert s["p5"] == pytest.approx(np.percentile(x, 5))
    assert s["min"] <= s["p5"] <= s["median"] <= s["max"]
    assert summarize([0.5])["std"] == 0.0
    with pytest.raises(CimnasError):
        summarize([])


def test_mean_ci_matches_scipy() -> None:
    x = [0.80, 0.81, 0.79, 0.83, 0.80]
    m, lo, hi = mean_ci(x)
    ref = st.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=st.sem(x))
    assert (lo, hi) == pytest.approx(ref)
    assert m == pytest.approx(np.mean(x))


def test_diff_ci_welch_matches_scipy() -> None:
    a = [0.81, 0.82, 0.80, 0.84]
    b = [0.78, 0.80, 0.77, 0.79, 0.76]
    d, lo, hi = diff_ci(a, b)
    res = st.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert d == pytest.approx(np.mean(a) - np.mean(b))
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    # a difference inside the spread has an interval that covers 0
    d2, lo2, hi2 = diff_ci([0.80, 0.82, 0.78], [0.81, 0.79, 0.80])
    assert lo2 < 0 < hi2


def test_combination_ci_generalises_welch() -> None:
    a, b = [0.81, 0.82, 0.80, 0.84], [0.78, 0.80, 0.77, 0.79, 0.76]
    assert combination_ci([a, b], [1, -1]) == pytest.approx(diff_ci(a, b))
    # interpolating halfway between two curve points: the estimate is the mean of their means
    c = [0.70, 0.72, 0.71]
    est, lo, hi = combination_ci([a, b, c], [1, -0.5, -0.5])
    assert est == pytest.approx(np.mean(a) - 0.5 * np.mean(b) - 0.5 * np.mean(c))
    assert lo < est < hi
