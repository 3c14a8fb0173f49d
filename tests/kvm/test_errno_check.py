"""kvmmu.kvm.errno_check: every random memslot request answered alike by model and kernel."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmmu import VM
from kvmmu.kvm.bindings import Kvm
from kvmmu.kvm.diff import probe_phys_bits
from kvmmu.kvm.errno_check import (
    KINDS,
    Request,
    RequestGenerator,
    model_apply,
    real_apply,
    run_errno_agreement,
)

pytestmark = pytest.mark.kvm


def test_two_thousand_random_requests_agree(no_fd_leak: None) -> None:
    summary = run_errno_agreement(2400, seed=11)
    assert summary.requests == 2400
    assert not summary.mismatches, [
        (m.request.describe(), m.model, m.real) for m in summary.mismatches[:5]
    ]
    assert set(summary.by_kind) == set(KINDS)
    assert {"ok", "EINVAL", "EEXIST"} <= set(summary.by_result)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    kinds=st.lists(st.sampled_from(KINDS), min_size=5, max_size=40),
)
def test_hypothesis_sequences_agree(seed: int, kinds: list[str]) -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        phys_bits = probe_phys_bits(vm)
        gen = RequestGenerator(random.Random(seed), phys_bits, 32764)
        model = VM(strategy="generation", phys_bits=phys_bits, address_spaces=1)  # no SMM here
        for kind in kinds:
            r = gen.draw(kind)
            real = real_apply(vm, r)
            assert model_apply(model, r) == real, r.describe()
            gen.applied(r, real)


#: Section 6 of kvm-mmio-generation.md as a sequence (later rows depend on the slots created).
TABLE: list[tuple[Request, str]] = [
    (Request("create", 0, 0, 0x10000, 0x1000, 0x7F0000000000), "ok"),
    (Request("overlap", 1, 0, 0x10000, 0x1000, 0x7F0000001000), "EEXIST"),
    (Request("adjacent", 1, 0, 0x11000, 0x1000, 0x7F0000000000), "ok"),
    (Request("unknown_flag", 2, 0x8, 0x20000, 0x1000, 0x7F0000000000), "EINVAL"),
    (Request("misaligned", 2, 0, 0x20800, 0x1000, 0x7F0000000000), "EINVAL"),
    (Request("bad_slot_id", 32764, 0, 0x20000, 0x1000, 0x7F0000000000), "EINVAL"),
    (Request("address_space", 1 << 16, 0, 0x20000, 0x1000, 0x7F0000000000), "EINVAL"),
    (Request("beyond_phys", 2, 0, 1 << 52, 0x1000, 0x7F0000000000), "EINVAL"),
    (Request("readonly_toggle", 0, 2, 0x10000, 0x1000, 0x7F0000000000), "EINVAL"),
    (Request("size_change", 0, 0, 0x10000, 0x2000, 0x7F0000000000), "EINVAL"),
    (Request("delete_missing", 9, 0, 0, 0, 0), "EINVAL"),
    (Request("flags_only", 0, 1, 0x10000, 0x1000, 0x7F0000000000), "ok"),
    (Request("move", 0, 1, 0x40000, 0x1000, 0x7F0000000000), "ok"),
    (Request("noop", 0, 1, 0x40000, 0x1000, 0x7F0000000000), "ok"),
]


@pytest.mark.parametrize(("request_", "expected"), TABLE, ids=[r.kind for r, _ in TABLE])
def test_section_6_table(request_: Request, expected: str) -> None:
    # Replay the sequence up to this row on both sides; every row must agree on the way.
    table = TABLE
    with Kvm() as kvm, kvm.create_vm() as vm:
        model = VM(strategy="generation", phys_bits=probe_phys_bits(vm), address_spaces=1)
        for r, exp in table:
            real, mod = real_apply(vm, r), model_apply(model, r)
            assert real == mod, r.describe()
            if r == request_:
                assert real == expected
                return
            assert real == exp
