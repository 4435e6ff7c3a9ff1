"""The tests and intervals results use, against published values."""

from __future__ import annotations

import pytest

from core.common import stats


@pytest.mark.parametrize(
    ("x", "df"), [(3.841459, 1), (5.991465, 2), (7.814728, 3), (9.487729, 4), (11.070498, 5), (12.591587, 6)]
)
def test_chi_square_tail_at_the_tabled_5_percent_points(x: float, df: int) -> None:
    assert stats.chi2_sf(x, df) == pytest.approx(0.05, abs=1e-7)


def test_chi_square_tail_elsewhere() -> None:
    assert stats.chi2_sf(0.5, 3) == pytest.approx(0.918891, abs=1e-6)
    assert stats.chi2_sf(20.0, 7) == pytest.approx(0.005570, abs=1e-6)
    assert stats.chi2_sf(0.0, 2) == 1.0


def test_newcombe_interval_matches_his_paper() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 against 48/80.
    low, high = stats.newcombe_diff(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)
    assert stats.newcombe_diff(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=1e-4)
    assert stats.newcombe_diff(6, 7, 2, 7) == pytest.approx((0.0582, 0.8062), abs=1e-4)
    # No events in one group, where Wald's interval would collapse to a point on that side.
    assert stats.newcombe_diff(5, 56, 0, 29) == pytest.approx((-0.0381, 0.1926), abs=1e-4)


def test_z_test_and_chi_square_agree_for_two_groups() -> None:
    z = stats.two_proportion_z(30, 200, 18, 210)
    chi = stats.chi_square_homogeneity([(30, 200), (18, 210)])
    assert z.statistic**2 == pytest.approx(chi.statistic)
    assert z.p_value == pytest.approx(chi.p_value)


def test_nothing_to_tell_apart() -> None:
    assert stats.two_proportion_z(0, 50, 0, 60).p_value == 1.0
    assert stats.chi_square_homogeneity([(0, 5), (0, 6), (0, 7)]).p_value == 1.0
