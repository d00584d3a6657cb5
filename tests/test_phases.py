"""Phase detection on synthetic curves with known breakpoints (logistic steps in log-time)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icldyn.analysis.phases import detect_drops, detect_plateaus, detect_rises, first_crossing
from icldyn.theory.exact_dynamics import ReducedLSA, zfb_initial

T = np.geomspace(1e-1, 1e5, 300)  # 6 decades, log-spaced like the recorder


def steps(centres, heights, widths, base=1.0, t=T):
    """base − Σ h_k σ((ln t − ln c_k)/w_k): plateaus joined by drops centred at c_k."""
    y = np.full_like(t, base)
    for c, h, w in zip(centres, heights, widths):
        y = y - h / (1 + np.exp(-(np.log(t) - np.log(c)) / w))
    return y


def assert_recovers(drops, centres, heights, base=1.0):
    assert len(drops) == len(centres)
    before = base
    for d, c, h in zip(drops, centres, heights):
        assert d.start < c < d.end
        assert abs(np.log10(d.midpoint / c)) < 0.1          # within a tenth of a decade
        # fraction of the start value lost; the tails beyond the slope threshold are not counted,
        # so slightly less than the full step (a few %, ≲ 0.06 with 2% noise)
        assert -0.08 < d.depth - h / before < 0.01
        before -= h


def test_three_noisy_drops_and_the_plateaus_between_them():
    centres, heights = [3.0, 300.0, 3e4], [0.6, 0.25, 0.1]
    y = steps(centres, heights, [0.15, 0.3, 0.3])
    noisy = y * (1 + 0.01 * np.random.default_rng(0).standard_normal(T.size))
    for curve in (y, noisy):
        assert_recovers(detect_drops(T, curve), centres, heights)
        plateaus = detect_plateaus(T, curve)
        # the stretch after the last drop is under 0.5 decade: too short to count
        assert [round(p.value, 2) for p in plateaus] == [1.0, 0.4, 0.15]
        assert plateaus[0].start == T[0]
        for p, c in zip(plateaus, centres):
            assert p.end < c  # each plateau ends before the drop that follows it
        assert detect_rises(T, curve) == []


@settings(deadline=None, max_examples=20)
@given(st.floats(0.0, 1.5), st.floats(0.4, 0.8), st.floats(0.08, 0.25), st.floats(0.0, 0.02),
       st.integers(0, 10_000))
def test_random_two_step_curves(log_c1, frac, width, noise, seed):
    # ranges keep both drops "sharp": steepest d ln y / d ln t ≥ 0.5, above the 0.3 threshold
    c1 = 10.0**log_c1
    c2 = c1 * 10**2.5                          # plateaus of ≥ 1.5 decades between drops
    h1 = frac
    h2 = 0.5 * (1 - frac)                      # the second drop loses half of what is left
    y = steps([c1, c2], [h1, h2], [width, width])
    y = y * (1 + noise * np.random.default_rng(seed).standard_normal(T.size))
    assert_recovers(detect_drops(T, y), [c1, c2], [h1, h2])
    assert len(detect_plateaus(T, y)) == 3


def test_noise_and_gentle_declines_are_not_drops():
    rng = np.random.default_rng(1)
    flat = 0.5 * (1 + 0.02 * rng.standard_normal(T.size))
    assert detect_drops(T, flat) == [] and detect_rises(T, flat) == []
    (plateau,) = detect_plateaus(T, flat)
    assert plateau.decades > 5.9 and plateau.value == pytest.approx(0.5, rel=0.01)
    # t^−0.2 loses 94% over six decades but never faster than the 0.3 threshold
    assert detect_drops(T, T**-0.2) == [] and detect_plateaus(T, T**-0.2) == []
    # a shallow step (2% of the value) is below min_depth
    assert detect_drops(T, steps([30.0], [0.02], [0.1])) == []


def test_linear_values_for_curves_that_cross_zero():
    y = steps([10.0], [2.0], [0.2], base=1.0)  # 1 → −1: no log possible
    (d,) = detect_drops(T, y)
    assert abs(np.log10(d.midpoint / 10.0)) < 0.1
    with pytest.raises(ValueError, match="log_y"):
        detect_drops(T, y, log_y=True)


def test_rises_time_the_stages_of_the_reduced_ode():
    system = ReducedLSA([1.0, 0.25, 0.0625], 20)
    t = np.geomspace(1e-2, 5e3, 300)
    curves = system.integrate(*zfb_initial(1e-3, 3), t)
    crossings = system.crossing_times(1e-3)
    for i in range(3):
        (rise,) = detect_rises(t, curves["mode_progress"][:, i])
        assert rise.depth > 0.9 and rise.y_end > 0.95
        assert rise.midpoint == pytest.approx(crossings[i], rel=0.1)
    # the loss: the escape from the saddle starts the first drop, near mode 1's crossing
    first = detect_drops(t, curves["loss"])[0]
    assert first.y_start == pytest.approx(system.saddle_loss, rel=0.02)
    assert first.midpoint == pytest.approx(crossings[0], rel=0.1)
    assert detect_plateaus(t, curves["loss"])[0].value == pytest.approx(system.saddle_loss, rel=1e-3)


def test_first_crossing_interpolates_in_log_time():
    t = np.array([1.0, 10.0, 100.0, 1000.0])
    y = np.log10(t)  # linear in ln t, so log-interpolation is exact
    assert first_crossing(t, y, 1.5) == pytest.approx(10**1.5)
    assert first_crossing(t, 3 - y, 0.25) == pytest.approx(10**2.75)          # a falling curve
    assert first_crossing(t, y, 0.0) == 1.0                                    # already there
    assert np.isnan(first_crossing(t, y, 5.0))                                 # never
    assert first_crossing(t, np.array([0, 2, 0, 2.0]), 1.0, "down") == pytest.approx(10**1.5)
    assert first_crossing([0.0, 2.0], [0.0, 1.0], 0.5) == pytest.approx(1.0)  # t = 0: linear in t
    with pytest.raises(ValueError, match="direction"):
        first_crossing(t, y, 1.0, "sideways")


def test_step_zero_rows_are_ignored():
    t = np.concatenate([[0.0], T])
    y = np.concatenate([[1.0], steps([30.0], [0.5], [0.2])])
    (d,) = detect_drops(t, y)
    assert abs(np.log10(d.midpoint / 30.0)) < 0.1
