"""The vCPU handle: address spaces, and the plain and steppable forms of one access agree."""

from __future__ import annotations

import pytest

from kvmmu import VM, AccessKind
from kvmmu.mmu.steps import run_to_completion

HVA = 0x7F00_0000_0000


def test_a_vcpu_in_smm_sees_the_second_address_space() -> None:
    vm = VM("generation", address_spaces=2, strict=True)
    vm.set_user_memory_region(1 << 16, 0, 0x3_0000, 0x1000, HVA)  # SMRAM: only in space 1
    vcpu = vm.create_vcpu()
    assert vcpu.access(0x3_0000).kind is AccessKind.MMIO
    vcpu.as_id = 1
    assert vcpu.access(0x3_0000).kind is AccessKind.RAM
    with pytest.raises(ValueError, match="address space 2"):
        vcpu.as_id = 2


def test_the_steppable_access_gives_the_same_answer_as_the_plain_one() -> None:
    plain, stepped = VM("generation"), VM("generation")
    for vm in (plain, stepped):
        vm.set_user_memory_region(0, 0, 0, 0x10000, HVA)
        vm.host_memory.write(HVA + 0x2000, b"\x07")
    a = plain.create_vcpu().access(0x2000, size=1)
    b = run_to_completion(stepped.create_vcpu().access_steps(0x2000, size=1))
    assert a == b and a.value == 7


@pytest.mark.parametrize(
    ("size", "value"), [(1, 0x1234), (1, 256), (2, 0x10000), (4, 1 << 32), (8, 1 << 64), (4, -1)]
)
def test_a_write_whose_value_does_not_fit_the_access_size_is_refused(size: int, value: int) -> None:
    vm = VM("generation")
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    vcpu = vm.create_vcpu()
    with pytest.raises(ValueError, match=f"does not fit in a {size}-byte access"):
        vcpu.access(0x10, write=True, size=size, value=value)
    with pytest.raises(ValueError, match="does not fit"):
        vcpu.access_steps(0x10, write=True, size=size, value=value)
    top = (1 << (8 * size)) - 1  # the largest value that fits is written and read back
    vcpu.access(0x10, write=True, size=size, value=top)
    assert vcpu.access(0x10, size=size).value == top


@pytest.mark.parametrize(("gpa", "value"), [(0.5, 0), (None, 0), ("0x10", 0), (0x10, 1.5), (0x10, None)])
def test_an_access_with_a_non_integer_gpa_or_value_names_them(gpa: object, value: object) -> None:
    vcpu = VM("generation").create_vcpu()
    with pytest.raises(TypeError, match="gpa and value must be integers"):
        vcpu.access(gpa, write=True, value=value)  # type: ignore[arg-type]
