"""kvmmu.kvm.calibrate: measurements on the real KVM, derived costs, the model's prediction."""

from __future__ import annotations

import pytest

from kvmmu.kvm import calibrate as kc
from kvmmu.sim.costs import default_costs, parse_costs

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def cal() -> kc.Calibration:
    return kc.calibrate(quick=True, runs=3)


def test_measurements_are_plausible(cal: kc.Calibration) -> None:
    assert len(cal.first_touch.samples) == 3
    # Per 4 KiB page: well above a mapped access, far below a millisecond.
    assert 50 < cal.first_touch.median < 100_000
    # The shadow MMU prefetches neighbours: fewer faults than pages, but some.
    assert 0 < cal.first_touch_pf_taken <= 2048 + 8
    assert cal.mmio_round_trip.median > 0 and cal.exit_to_userspace.median > 0
    lives = sorted({p.live_ptes for p in cal.memslot})
    assert lives == list(kc.QUICK_PTES)
    for p in cal.memslot:
        assert len(p.samples) == 3 and p.median > 0
        assert p.pages_4k >= p.live_ptes  # KVM's own count covers the touched pages


def test_zap_all_quirk_zaps_every_shadow_page_on_delete_and_move(cal: kc.Calibration) -> None:
    # Timings are noisy on a shared machine; what each operation *zapped* is not.
    top = max(kc.QUICK_PTES)
    for op in ("delete", "move"):
        assert cal.point(op, True, top).zapped >= top // 512  # at least every leaf page
        assert cal.point(op, False, top).zapped == 0  # only the small slot's own: none live
    assert cal.point("create", True, top).zapped == 0


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
