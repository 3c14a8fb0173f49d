"""kvmmu.kvm.calibrate: measurements on the real KVM, derived costs, the model's prediction."""

from __future__ import annotations

import pytest

from kvmmu.kvm import calibrate as kc
from kvmmu.sim.costs import default_costs, parse_costs


@pytest.fixture(scope="module")
def cal() -> kc.Calibration:
    return kc.calibrate(quick=True, runs=3)


@pytest.mark.kvm
def test_measurements_are_plausible(cal: kc.Calibration) -> None:
    assert len(cal.first_touch.samples) == 3
    # Per 4 KiB page: well above a mapped access, far below a millisecond.
    assert 50 < cal.first_touch.median < 100_000
    # The shadow MMU prefetches neighbours: fewer faults than pages, but some.
    assert 0 < cal.first_touch_pf_taken <= 2048 + 8
    assert cal.mmio_round_trip.median > 0 and cal.exit_to_userspace.median > 0
    for fig in (cal.host_page_alloc, cal.madvise_present, cal.madvise_empty, cal.null_call):
        assert fig is not None and len(fig.samples) == 3 and fig.median > 0
    lives = sorted({p.live_ptes for p in cal.memslot})
    assert lives == list(kc.QUICK_PTES)
    for p in cal.memslot:
        assert len(p.samples) == 3 and p.median > 0
        assert p.pages_4k >= p.live_ptes  # KVM's own count covers the touched pages


@pytest.mark.kvm
def test_zap_all_quirk_zaps_every_shadow_page_on_delete_and_move(cal: kc.Calibration) -> None:
    # Timings are noisy on a shared machine; what each operation *zapped* is not.
    top = max(kc.QUICK_PTES)
    for op in ("delete", "move"):
        assert cal.point(op, True, top).zapped >= top // 512  # at least every leaf page
        assert cal.point(op, False, top).zapped == 0  # only the small slot's own: none live
    assert cal.point("create", True, top).zapped == 0


@pytest.mark.kvm
def test_profile_loads_in_the_simulation(cal: kc.Calibration) -> None:
    defaults = default_costs()
    costs, how = kc.derive_costs(cal, defaults.costs)
    assert set(costs) <= set(defaults.costs)
    assert costs["exit_to_userspace_ns"] == round(cal.mmio_round_trip.median)
    text = kc.profile_toml(costs, {"profile": "test", **how})
    profile = parse_costs(text, "calibrated.toml")
    for name, value in costs.items():
        assert profile[name] == value
    assert profile.source["profile"] == "test"


def test_model_prediction_follows_the_quirk() -> None:
    d = default_costs()
    on = [
        kc.predict_memslot_op("delete", n, True, d.step, d["memslot_ioctl_ns"]) for n in (0, 4096)
    ]
    off = [
        kc.predict_memslot_op("delete", n, False, d.step, d["memslot_ioctl_ns"]) for n in (0, 4096)
    ]
    assert on[1] > on[0]  # zap-all frees every shadow page
    assert off[0] == off[1]  # only the slot's own, which has none live
    create = kc.predict_memslot_op("create", 4096, True, d.step, d["memslot_ioctl_ns"])
    assert create < on[0]  # one publish, not two, and no zap


# --- the fit's plausibility, on calibrations built by hand (no /dev/kvm needed) -------------------


def _calibration(create0: float, delete0: float, per_pte: float, first: tuple[float, ...]) -> kc.Calibration:
    points = []
    for zap_all in (True, False):
        for n in kc.QUICK_PTES:
            for op, base in (("create", create0), ("move", delete0), ("delete", delete0)):
                slope = per_pte if zap_all and op != "create" else 0.0
                t = base + slope * n
                points.append(kc.MemslotPoint(op, zap_all, n, n, (t, t * 1.01, t * 0.99)))
    return kc.Calibration(
        kc.Figure("first_touch_fault", first),
        len(first),
        kc.Figure("mmio_exit_round_trip", (36_000.0, 37_000.0, 35_000.0)),
        kc.Figure("exit_to_userspace", (1_400.0, 1_500.0, 1_300.0)),
        tuple(points),
        3,
        "test",
    )


def test_a_calibration_like_the_design_notes_fits_without_problems() -> None:
    fit = kc.fit_costs(_calibration(14_000, 19_000, 46, (800.0, 820.0, 780.0)), default_costs().costs)
    assert fit.problems == ()
    assert fit.raw["zap_slope"] == pytest.approx(46, rel=0.05)
    assert fit.raw["publish_and_grace"] == pytest.approx(5_000, rel=0.05)
    assert fit.spread["first_touch_fault"] == 20.0


def test_a_loaded_hosts_negative_and_absurd_fits_are_problems() -> None:
    # The loaded host: delete slower than anything at 0 PTEs, a falling slope, a noisy fault.
    cal = _calibration(14_000, 3_200_000, -20, (800.0, 5_000.0, 37_000.0))
    fit = kc.fit_costs(cal, default_costs().costs)
    text = " | ".join(fit.problems)
    assert "publish_and_grace" in text and "zap_slope = -20" in text and "first_touch_fault: spread" in text
    # The clamped profile would have looked harmless: that is why the raw values are checked.
    assert fit.costs["spte_zapped_ns"] == 1


def test_mad_ignores_one_outlier() -> None:
    assert kc.mad([10.0, 11.0, 9.0, 10.0, 1000.0]) == 1.0
    assert kc.Figure("x", (5.0,)).spread == 0.0


# --- rounds: a shared host slows whole rounds; the quietest is fitted -----------------------------


def test_the_quietest_round_is_fitted_and_the_busy_rounds_are_reported() -> None:
    quiet = _calibration(12_800, 17_100, 44, (2_200.0, 2_210.0, 2_190.0))
    # A round during another agent's build: every memslot op slower, the fault a little slower.
    busy = _calibration(37_000, 61_000, 44, (2_300.0, 2_310.0, 2_290.0))
    rf = kc.fit_rounds([busy, quiet, busy], default_costs().costs)
    assert rf.chosen == 1 and rf.cal is quiet
    assert rf.scores[1] == pytest.approx(1.0) and rf.scores[0] > 1.5
    lo, hi = rf.between()["memslot_create"]
    assert (lo, hi) == (pytest.approx(12_800), pytest.approx(37_000))
    assert rf.between_spread()["first_touch_fault"] == pytest.approx(100 / 2_200)
    warned = " | ".join(rf.warnings())
    assert "memslot_create" in warned and "publish_and_grace" in warned
    assert "first_touch_fault" not in warned  # 5 % apart: not a busy host
    assert rf.fit.problems == ()


def test_one_round_has_no_between_round_spread_to_warn_about() -> None:
    rf = kc.fit_rounds([_calibration(14_000, 19_000, 46, (800.0, 820.0, 780.0))],
                       default_costs().costs)
    assert rf.chosen == 0 and rf.warnings() == ()
    assert all(s == 0.0 for s in rf.between_spread().values())
    source = kc.profile_source(rf, "test")
    assert source["rounds"].startswith("1, fitted from round 1") and "cpu" in source


def test_no_rounds_is_an_error() -> None:
    with pytest.raises(ValueError, match="no calibration rounds"):
        kc.quietest_round([])


def test_host_page_figures_become_the_map_tests_costs() -> None:
    import dataclasses

    base = _calibration(14_000, 19_000, 46, (800.0, 820.0, 780.0))
    assert "host_page_alloc_ns" not in kc.fit_costs(base, default_costs().costs).costs
    cal = dataclasses.replace(
        base,
        host_page_alloc=kc.Figure("host_page_alloc", (1_500.0, 1_510.0, 1_490.0)),
        madvise_present=kc.Figure("madvise_present", (6_000.0, 6_100.0, 5_900.0)),
        madvise_empty=kc.Figure("madvise_empty", (1_300.0, 1_310.0, 1_290.0)),
        null_call=kc.Figure("null_call", (100.0, 101.0, 99.0)),
    )
    fit = kc.fit_costs(cal, default_costs().costs)
    assert fit.problems == ()
    assert fit.costs["host_page_alloc_ns"] == 1_500
    assert fit.costs["mmu_notifier_ns"] == 1_200  # the empty call less the null call
    assert fit.costs["host_unmap_present_ns"] == 4_700
    assert "madvise" in fit.how["host_pages"]
    # A present call cheaper than an empty one is a disturbed measurement, not a cost.
    odd = dataclasses.replace(cal, madvise_present=kc.Figure("madvise_present", (500.0,) * 3))
    assert any("madvise_present_extra" in p for p in kc.fit_costs(odd, default_costs().costs)
               .problems)
