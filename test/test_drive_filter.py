# SPDX-License-Identifier: Apache-2.0
"""The drive filter alone (xview_loc_ros.drive_filter) on synthetic drives with known truth: heat maps
drawn around the true position (and decoys), GNSS fixes with noise and jumps, odometry with errors."""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import pytest

from xview_loc_ros.drive_filter import DriveFilter, FilterParams, FilterState, OdometryBuffer
from xview_loc_ros.geo import LocalENU, PatchGeoref

DATUM = LocalENU(37.7749, -122.4194, 0.0)
S, MPP = 128, 0.5  # the small model's finest heat map: 128 x 128 cells of 0.5 m over a 64 m patch
FIX_STD = 5.0


def heatmap(centre: np.ndarray, peaks: List[Tuple[np.ndarray, float]], std: float = 1.0) -> np.ndarray:
    """Position probabilities (S x S, row 0 north) over the patch centred at ``centre`` (map metres):
    Gaussian peaks (position, weight) on a faint background."""
    xs = (np.arange(S) + 0.5 - S / 2) * MPP
    e, n = centre[0] + xs[None, :], centre[1] - xs[:, None]
    p = np.full((S, S), 1e-5)
    for pos, w in peaks:
        p += w * np.exp(-0.5 * ((e - pos[0]) ** 2 + (n - pos[1]) ** 2) / std**2)
    return p / p.sum()


def georef(centre: np.ndarray) -> PatchGeoref:
    lat, lon, _ = DATUM.to_latlon(float(centre[0]), float(centre[1]), 0.0)
    return PatchGeoref(float(lat), float(lon), MPP, S)


def straight(n: int, dt: float = 0.2, speed: float = 10.0, heading_rad: float = math.pi / 2) -> np.ndarray:
    """(n, 2) true positions of a vehicle driving straight (ENU yaw ``heading_rad``)."""
    d = np.array([math.cos(heading_rad), math.sin(heading_rad)]) * speed * dt
    return np.arange(n)[:, None] * d[None, :]


def run(
    f: DriveFilter,
    truth: np.ndarray,
    fixes: np.ndarray,
    peaks_of=None,
    dt: float = 0.2,
    t0: float = 100.0,
    odom_of=None,
) -> List[float]:
    """Step the filter through the drive: predict with the true motion (or ``odom_of(k)``), fix, heat map
    (``peaks_of(k)`` -> peaks, None = no heat map). Returns the error of the mean per step (metres)."""
    errs = []
    for k in range(len(truth)):
        t = t0 + k * dt
        if k:
            delta = odom_of(k) if odom_of else truth[k] - truth[k - 1]
            f.predict(t, tuple(delta), "odom")
        f.update_gnss(t, fixes[k][0], fixes[k][1], np.eye(2) * FIX_STD**2)
        if peaks_of is not None:
            peaks = peaks_of(k)
            if peaks is not None:
                f.update_heatmap(t, heatmap(fixes[k], peaks), georef(fixes[k]), DATUM)
        est = f.estimate()
        assert est is not None
        errs.append(float(np.hypot(est.east - truth[k][0], est.north - truth[k][1])))
    return errs


def noisy_fixes(truth: np.ndarray, seed: int = 0, std: float = FIX_STD) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(0.0, std, truth.shape)


def test_converges_from_a_gnss_prior():
    truth = straight(30)
    fixes = noisy_fixes(truth)
    f = DriveFilter(FilterParams())
    errs = run(f, truth, fixes, lambda k: [(truth[k], 1.0)])
    gnss = np.hypot(*(fixes - truth).T)
    assert f.state == FilterState.TRACKING
    assert max(errs[5:]) < 1.0 and np.median(errs) < 0.3 * np.median(gnss), (errs, gnss)


def test_a_repeated_decoy_that_motion_contradicts_is_rejected():
    """Every heat map has a decoy 1.5 x stronger than the true peak at a fixed place in the world 12 m
    from the start: a per-frame argmax picks the decoy while it is in the patch; the vehicle drives away
    from it, the filter follows the peak that moves as the odometry says."""
    truth = straight(25)
    decoy = np.array([-9.0, 8.0])
    fixes = noisy_fixes(truth, seed=1)
    f = DriveFilter(FilterParams())
    errs = run(f, truth, fixes, lambda k: [(truth[k], 1.0), (decoy, 1.5)])
    frame_errs = [float(np.hypot(*(decoy - truth[k]))) for k in range(len(truth))]
    assert min(frame_errs[:10]) > 8.0  # the decoy is the per-frame answer, and it is wrong
    assert max(errs[4:]) < 1.5, errs


def test_a_30_m_multipath_jump_does_not_drag_the_belief():
    truth = straight(40)
    fixes = noisy_fixes(truth, seed=2, std=2.0)
    fixes[15:25] += np.array([21.0, 21.0])  # 30 m off for 2 s (10 fixes at 5 Hz)
    f = DriveFilter(FilterParams())
    states = []

    def peaks(k):
        states.append(f.state)
        return [(truth[k], 1.0)]

    errs = run(f, truth, fixes, peaks)
    assert max(errs[10:]) < 2.0, errs
    assert FilterState.LOST in states and f.state == FilterState.TRACKING
    assert f.counts["reinit_lost"] == 0 and f.counts["gnss_disagree"] >= 9


def test_a_persistent_disagreement_reinitialises_from_the_fix():
    """The belief locks on a wrong mode (heat maps agree with it, not with the truth); the fix keeps
    disagreeing: after filter_lost_updates fixes spanning filter_lost_s the belief restarts at the fix."""
    truth = straight(40)
    fixes = noisy_fixes(truth, seed=3, std=1.0)
    # no uniform mixing: the lost-track logic alone (mixing would let the fixes pull the belief back first)
    f = DriveFilter(FilterParams(lost_updates=5, lost_s=0.8, uniform_mix=0.0))
    f.update_gnss(100.0, 0.0, 0.0, np.eye(2))
    wrong = np.array([40.0, 0.0])
    f.initialise(100.0, wrong[0], wrong[1], np.eye(2), "test")  # a belief 40 m off, confident
    reinit = None
    for k in range(1, 40):
        t = 100.0 + 0.2 * k
        f.predict(t, tuple(truth[k] - truth[k - 1]), "odom")
        f.update_gnss(t, fixes[k][0], fixes[k][1], np.eye(2) * FIX_STD**2)
        if f.counts["reinit_lost"] and reinit is None:
            reinit = k
    assert reinit is not None and 5 <= reinit <= 8, reinit
    est = f.estimate()
    assert np.hypot(est.east - truth[-1][0], est.north - truth[-1][1]) < 5.0


def test_a_long_outage_reinitialises_at_the_next_fix():
    truth = straight(10)
    fixes = noisy_fixes(truth, seed=4)
    f = DriveFilter(FilterParams(max_gap_s=5.0))
    run(f, truth, fixes, lambda k: [(truth[k], 1.0)])
    t_last = f.stamp
    assert not f.predict(t_last + 12.0, (100.0, 0.0), "odom")  # 12 s without an image: too long to predict
    assert f.state == FilterState.UNINITIALISED and f.estimate() is None
    f.update_gnss(t_last + 12.1, 500.0, 20.0, np.eye(2) * FIX_STD**2)
    est = f.estimate()
    assert f.state == FilterState.REINITIALISED and f.counts["reinit_time_gap"] == 1
    assert abs(est.east - 500.0) < 0.5 and abs(est.north - 20.0) < 0.5
    assert est.cov_en[0, 0] == pytest.approx(FIX_STD**2, rel=0.05)


def test_stamps_backwards_restart_and_out_of_order_is_dropped():
    truth = straight(10)
    fixes = noisy_fixes(truth, seed=5)
    f = DriveFilter(FilterParams())
    run(f, truth, fixes, lambda k: [(truth[k], 1.0)])
    before, stamp = f.belief.copy(), f.stamp
    # slightly older (a late message): dropped, counted, nothing changes
    assert not f.update_gnss(stamp - 0.1, 40.0, 40.0, np.eye(2))
    assert not f.update_heatmap(stamp - 0.1, heatmap(fixes[0], [(fixes[0], 1.0)]), georef(fixes[0]), DATUM)
    assert not f.predict(stamp - 0.05, (3.0, 0.0), "odom")
    assert np.array_equal(f.belief, before) and f.stamp == stamp
    assert f.counts["dropped_out_of_order_gnss"] == 1 and f.counts["dropped_out_of_order_heatmap"] == 1
    assert f.counts["dropped_out_of_order_predict"] == 1
    # far older (a bag restarted): the belief restarts at the next fix
    f.update_gnss(stamp - 60.0, 7.0, -3.0, np.eye(2) * 4.0)
    est = f.estimate()
    assert f.counts["reinit_time_backwards"] == 1 and f.state == FilterState.REINITIALISED
    assert est.stamp == stamp - 60.0 and abs(est.east - 7.0) < 0.3 and abs(est.north + 3.0) < 0.3


def test_covariance_shrinks_with_heat_maps():
    f = DriveFilter(FilterParams())
    truth = np.array([3.0, -2.0])
    f.update_gnss(10.0, 0.0, 0.0, np.eye(2) * 100.0)
    traces = [np.trace(f.estimate().cov_en)]
    for k in range(4):
        f.predict(10.0 + 0.2 * k, (0.0, 0.0), "odom")
        f.update_heatmap(10.0 + 0.2 * k, heatmap(np.zeros(2), [(truth, 1.0)]), georef(np.zeros(2)), DATUM)
        traces.append(np.trace(f.estimate().cov_en))
    est = f.estimate()
    assert all(b < a for a, b in zip(traces, traces[1:])), traces
    assert traces[1] < 0.5 * traces[0] and traces[-1] < 0.01 * traces[0], traces
    assert np.hypot(est.east - truth[0], est.north - truth[1]) < 0.3
    assert np.hypot(est.map_east - truth[0], est.map_north - truth[1]) <= 0.5


def test_odometry_only_prediction_error_grows_with_distance():
    """No fixes or heat maps after the start: odometry 1 % long, integrated along an IMU heading 0.5 deg
    off (what the node does: odometry speed x IMU heading). The belief's
    spread grows with the distance driven (random walk: std ~ sqrt(distance)) and keeps covering the
    truth within 3 sigma."""
    p = FilterParams(window_m=128.0)
    f = DriveFilter(p)
    f.update_gnss(0.0, 0.0, 0.0, np.eye(2) * 0.25)
    dt, speed, yaw, odo_yaw = 0.1, 10.0, 0.0, math.radians(0.5)
    pos = np.zeros(2)
    stds, errs, dists = [], [], []
    for k in range(1, 301):  # 300 m
        step = speed * dt
        pos = pos + step * np.array([math.cos(yaw), math.sin(yaw)])
        d = 1.01 * step * np.array([math.cos(odo_yaw), math.sin(odo_yaw)])
        assert f.predict(k * dt, tuple(d), "odom")
        if k % 50 == 0:
            est = f.estimate()
            stds.append(math.sqrt(np.max(np.linalg.eigvalsh(est.cov_en))))
            errs.append(float(np.hypot(est.east - pos[0], est.north - pos[1])))
            dists.append(k * step)
    assert all(b > a for a, b in zip(stds, stds[1:])), stds
    assert all(b > a for a, b in zip(errs, errs[1:])), errs  # the odometry's errors accumulate
    # std grows as the model says: sqrt(a^2 d + b^2 t)
    expect = [math.sqrt(p.noise_odom_per_sqrt_m**2 * d + p.noise_per_sqrt_s**2 * d / speed) for d in dists]
    assert stds == pytest.approx(expect, rel=0.15)
    assert all(e < 3 * s for e, s in zip(errs, stds)), (errs, stds)


def test_the_shift_is_exact_and_adds_the_modelled_variance():
    p = FilterParams(noise_per_sqrt_s=0.0)
    f = DriveFilter(p)
    f.update_gnss(0.0, 1.0, 2.0, np.eye(2) * 4.0)
    a = f.estimate()
    assert f.predict(0.1, (0.37, -0.21), "odom")
    b = f.estimate()
    assert b.east - a.east == pytest.approx(0.37, abs=1e-3) and b.north - a.north == pytest.approx(-0.21, abs=1e-3)
    added = p.noise_odom_per_sqrt_m**2 * math.hypot(0.37, 0.21)
    assert b.cov_en[0, 0] - a.cov_en[0, 0] == pytest.approx(added, rel=0.02)
    assert b.cov_en[1, 1] - a.cov_en[1, 1] == pytest.approx(added, rel=0.02)


def test_the_window_follows_the_vehicle_without_losing_it():
    truth = straight(120, speed=15.0)  # 360 m: several re-centrings of a 96 m window
    fixes = noisy_fixes(truth, seed=6)
    f = DriveFilter(FilterParams())
    errs = run(f, truth, fixes, lambda k: [(truth[k], 1.0)] if k % 3 == 0 else None)
    assert max(errs[5:]) < 1.0
    assert abs(f.centre[1] - truth[-1][1]) <= f.n * f.cell / 8 + f.cell


def test_heat_maps_outside_the_patch_are_flat():
    """A heat map whose patch does not cover the belief leaves it as it was (no uniform mixing here: the
    mixing itself is tested below)."""
    f = DriveFilter(FilterParams(uniform_mix=0.0))
    f.update_gnss(0.0, 0.0, 0.0, np.eye(2) * 4.0)
    before = f.belief.copy()
    far = np.array([0.0, 45.0])  # patch spans north 13..77 m: the belief (2 m std at 0) is below it
    assert f.update_heatmap(0.0, heatmap(far, [(far, 1.0)]), georef(far), DATUM)
    assert np.abs(f.belief - before).max() < 1e-3 * before.max()


def test_odometry_buffer_integrates_arcs_and_refuses_gaps():
    buf = OdometryBuffer(max_gap_s=0.3)
    w = 0.2  # rad/s
    for k in range(0, 101):
        buf.add(k * 0.05, 5.0, w)
    e, n = buf.displacement(1.0, 3.0, 0.0)
    r = 5.0 / w  # a circle of 25 m radius, 0.4 rad of it
    assert e == pytest.approx(r * math.sin(0.4), abs=0.01) and n == pytest.approx(r * (1 - math.cos(0.4)), abs=0.01)
    assert buf.displacement(4.9, 5.2, 0.0) is not None  # the last sample holds for max_gap_s
    assert buf.displacement(4.9, 5.5, 0.0) is None
    gap = OdometryBuffer(max_gap_s=0.3)
    for t in (0.0, 0.1, 0.2, 1.0, 1.1):
        gap.add(t, 1.0, 0.0)
    assert gap.displacement(0.0, 0.2, 0.0) == pytest.approx((0.2, 0.0))
    assert gap.displacement(0.0, 1.1, 0.0) is None


def test_one_update_is_cheap():
    """predict + GNSS + heat map on the default grid: the budget is 10 % of the small model's inference
    (~15 ms on 2 cores). Median < 3 ms here leaves room for a loaded CI machine; bench/bench_filter.py
    measures it properly."""
    import time

    truth = straight(60)
    fixes = noisy_fixes(truth, seed=7)
    f = DriveFilter(FilterParams())
    maps = [(heatmap(fixes[k], [(truth[k], 1.0)]), georef(fixes[k])) for k in range(len(truth))]
    times: List[float] = []
    for k in range(len(truth)):
        t = 100.0 + 0.2 * k
        t0 = time.perf_counter()
        f.predict(t, tuple(truth[k] - truth[k - 1]) if k else (0.0, 0.0), "odom")
        f.update_gnss(t, fixes[k][0], fixes[k][1], np.eye(2) * FIX_STD**2)
        f.update_heatmap(t, maps[k][0], maps[k][1], DATUM)
        times.append(time.perf_counter() - t0)
    assert np.median(times[5:]) < 3e-3, np.median(times[5:])


def test_ablation_switches_ignore_heat_maps_or_gnss_after_initialisation():
    """temperature 0: heat maps leave the belief alone (GNSS + motion); gnss_init_only: after the first
    fix the belief follows heat maps and motion, and a fix is measured (innovation) but never applied."""
    truth = straight(30)
    fixes = noisy_fixes(truth, seed=3)
    flat = DriveFilter(FilterParams(heatmap_temperature=0.0))
    plain = DriveFilter(FilterParams(heatmap_temperature=0.0))
    a = run(flat, truth, fixes, lambda k: [(truth[k] + np.array([6.0, 0.0]), 1.0)])  # heat maps 6 m off
    b = run(plain, truth, fixes)  # no heat maps at all
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert flat.counts["heatmap_ignored"] == len(truth)
    biased = fixes + np.array([0.0, 8.0])  # every fix 8 m north of the truth
    init_only = DriveFilter(FilterParams(gnss_init_only=True))
    c = run(init_only, truth, biased, lambda k: [(truth[k], 1.0)])
    assert init_only.counts["gnss_ignored"] == len(truth) - 1 and np.mean(c[10:]) < 0.5, c
    before = init_only.belief.copy()
    assert init_only.update_gnss(init_only.stamp, 20.0, 20.0, np.eye(2))  # seen (innovation), not applied
    np.testing.assert_array_equal(init_only.belief, before)
    assert init_only.last_innovation.sigmas > 5


@pytest.mark.parametrize("mix", [1e-3, 0.0])
def test_uniform_mixing_lets_consistent_heat_maps_recover_a_confidently_wrong_belief(mix):
    """A belief 30 m off and confident (as after a wrong motion scale); the fixes are weak (30 m std) and the
    heat maps, in a patch around the truth, point at the truth: with the mixing the belief is back within a
    few frames; without it, the wrong place holds (nothing of the belief is left where the heat maps point)."""
    truth = straight(20)
    f = DriveFilter(FilterParams(uniform_mix=mix))
    f.update_gnss(100.0, 0.0, 0.0, np.eye(2))
    f.initialise(100.0, 30.0, 0.0, np.eye(2) * 0.25, "test")
    errs = []
    for k in range(1, 20):
        t = 100.0 + 0.2 * k
        f.predict(t, tuple(truth[k] - truth[k - 1]), "odom")
        f.update_gnss(t, truth[k][0], truth[k][1], np.eye(2) * 900.0)
        f.update_heatmap(
            t,
            heatmap(truth[k] + np.array([5.0, 0.0]), [(truth[k], 1.0)]),
            georef(truth[k] + np.array([5.0, 0.0])),
            DATUM,
        )
        est = f.estimate()
        errs.append(float(np.hypot(est.east - truth[k][0], est.north - truth[k][1])))
    if mix:
        assert max(errs[4:]) < 1.5, errs
    else:
        assert min(errs) > 20.0, errs
