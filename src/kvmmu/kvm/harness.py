"""A real VM running the test guest, one thread per vCPU, driven one access at a time.

Design. :class:`RealMachine` owns everything of one run (``/dev/kvm``, the VM, the harness memslot,
the scenario's host memory, the vCPU threads) and tears all of it down in ``close``, whatever
happened: threads are stopped by a kick (see :mod:`kvmmu.kvm.bindings`), joined, then the fds are
closed and memory unmapped.

Each vCPU has a worker thread that loops on ``KVM_RUN``.  The host posts a command by writing the
vCPU's mailbox in harness memory (sequence number last; x86 stores are seen in order) and putting a
token on the worker's queue; a worker that the guest parked with the *idle* doorbell waits on that
queue, a worker whose guest is still polling needs no token at all.  Exits the worker sees:

* MMIO at the *done* doorbell: the step finished; the data is ``rax`` (the value a read returned).
* MMIO at the *idle* doorbell: the guest has nothing to do; wait for a token.
* MMIO anywhere else: the step's access itself exited (no memslot, or a write to a READONLY slot);
  it is recorded with gpa, length, direction and data, a read is completed with zeros.
* anything else (SHUTDOWN after a fault, FAIL_ENTRY, INTERNAL_ERROR): the guest is dead; reported.

A command that does not complete within the timeout stops every vCPU and raises
:class:`GuestTimeout`; a dead guest raises :class:`GuestCrashed`.  Either way the machine is
unusable afterwards and must be closed (the context manager does it).

Steps are serialized by default (the host waits for each result), which makes a run deterministic
and comparable with the model; :meth:`RealMachine.access_many` issues several vCPUs' accesses at
once, for scenarios that want two vCPUs faulting simultaneously.

Prior art: the kernel selftests' ``ucall`` (guest-to-host reports through an exit) and their
multi-vCPU tests (``memslot_modification_stress_test``, ``memslot_perf_test``: vCPU threads that
keep running while the main thread changes memslots).
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from kvmmu.kvm.bindings import (
    KICK_SIGNAL,
    KVM_X86_QUIRK_SLOT_ZAP_ALL,
    Cap,
    Exit,
    ExitReason,
    HostMemory,
    Kvm,
    KvmIoctlError,
    MmioExit,
    SimpleExit,
    Vcpu,
    Vm,
)
from kvmmu.kvm.guest import (
    DOORBELL_DONE,
    DOORBELL_IDLE,
    HARNESS_GPA,
    HARNESS_SLOT,
    GuestLayout,
    MailboxField,
    Op,
    build_program,
)
from kvmmu.kvm.stats import StatsReader

#: Default seconds one guest step may take before the run is declared hung.
DEFAULT_TIMEOUT = 5.0


class GuestError(RuntimeError):
    """The guest did not complete a step; the machine must be closed."""


class GuestTimeout(GuestError):
    """A step did not complete in time (the vCPUs were kicked out of KVM_RUN)."""


class GuestCrashed(GuestError):
    """A vCPU exited with something other than MMIO (e.g. SHUTDOWN after a triple fault)."""

    def __init__(self, vcpu: int, exit_: Exit | None, what: str) -> None:
        super().__init__(f"vCPU {vcpu}: {what}")
        self.vcpu = vcpu
        self.exit = exit_


@dataclass(frozen=True, slots=True)
class Access:
    """One guest access to perform: ``size`` bytes at ``gpa`` on vCPU ``vcpu``."""

    vcpu: int
    gpa: int
    write: bool = False
    size: int = 4
    value: int = 0


@dataclass(frozen=True, slots=True)
class RealOutcome:
    """What one access observed on the real KVM.

    ``mmio`` lists the MMIO exits the access caused (empty: RAM handled it).  ``value`` is what
    the guest's register held afterwards: the loaded value for a RAM read (zero-extended), the
    zeros the host supplied for an MMIO read, the stored value for a write.
    """

    value: int
    mmio: tuple[MmioExit, ...]
    elapsed_ns: int

    @property
    def kind(self) -> str:
        return "mmio" if self.mmio else "ram"


@dataclass(slots=True)
class _Result:
    outcome: RealOutcome | None = None
    error: GuestError | None = None


@dataclass(slots=True)
class _Worker:
    index: int
    vcpu: Vcpu
    tokens: queue.SimpleQueue[bool] = field(default_factory=queue.SimpleQueue)
    results: queue.SimpleQueue[_Result] = field(default_factory=queue.SimpleQueue)
    thread: threading.Thread | None = None
    started_ns: int = 0
    exits: int = 0
    running: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


class RealMachine:
    """A real VM with the test guest loaded on ``nr_vcpus`` vCPUs (see the module docstring)."""

    def __init__(
        self,
        layout: GuestLayout | None = None,
        *,
        spin: int = 0,
        zap_all_quirk: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        kvm_path: str = "/dev/kvm",
    ) -> None:
        self.layout = layout or GuestLayout()
        self.timeout = timeout
        self.spin = spin
        self._stop = threading.Event()
        self._dead: GuestError | None = None
        self._seq = [0] * self.layout.nr_vcpus
        self._workers: list[_Worker] = []
        self.kvm = Kvm(kvm_path)
        self.vm: Vm | None = None
        try:
            max_vcpus = self.kvm.check_extension(Cap.NR_VCPUS)
            if self.layout.nr_vcpus > max_vcpus:
                raise ValueError(
                    f"{self.layout.nr_vcpus} vCPUs requested; this host allows {max_vcpus} "
                    "(KVM_CAP_NR_VCPUS)"
                )
            self.vm = self.kvm.create_vm()
            if not zap_all_quirk:
                self.vm.disable_quirks(KVM_X86_QUIRK_SLOT_ZAP_ALL)
            self.harness = self.vm.allocate(self.layout.harness_size)
            for off, data in self.layout.page_tables().items():
                self.harness.write(off, data)
            self.harness.write(
                self.layout.code_gpa - HARNESS_GPA, build_program().encode(self.layout.code_gpa)
            )
            for i in range(self.layout.nr_vcpus):
                self.harness.write_u64(self.layout.mailbox_offset(i) + MailboxField.SPIN, spin)
            self.vm.set_user_memory_region(
                HARNESS_SLOT, 0, HARNESS_GPA, self.layout.harness_size, self.harness.addr
            )
            cpuid = self.kvm.supported_cpuid()
            for i in range(self.layout.nr_vcpus):
                vcpu = self.vm.create_vcpu()
                vcpu.set_cpuid(cpuid)
                vcpu.set_sregs(self.layout.sregs(vcpu.get_sregs()))
                vcpu.set_regs(self.layout.regs(i))
                self._workers.append(_Worker(i, vcpu))
            for w in self._workers:
                w.thread = threading.Thread(
                    target=self._worker_loop, args=(w,), name=f"kvmmu-vcpu{w.index}", daemon=True
                )
                w.thread.start()
        except BaseException:
            self.close()
            raise

    # --- memory and memslots ----------------------------------------------------------------
    def allocate(self, size: int) -> HostMemory:
        """Host memory for the scenario's memslots (unmapped at close)."""
        return self._vm().allocate(size)

    def set_user_memory_region(
        self, slot: int, flags: int, guest_phys_addr: int, memory_size: int, userspace_addr: int
    ) -> None:
        """``KVM_SET_USER_MEMORY_REGION`` while the vCPU threads are alive (raises on refusal)."""
        self._vm().set_user_memory_region(slot, flags, guest_phys_addr, memory_size, userspace_addr)

    def get_dirty_log(self, slot: int, memory_size: int) -> bytes:
        return self._vm().get_dirty_log(slot, memory_size)

    def _vm(self) -> Vm:
        if self.vm is None or self.vm.closed:
            raise GuestError("the machine is closed")
        return self.vm

    def vm_stats(self) -> StatsReader:
        """The VM's binary stats (``pages_4k``, ``mmu_shadow_zapped``, ...)."""
        return self._vm().stats()

    @property
    def vcpus(self) -> list[Vcpu]:
        return [w.vcpu for w in self._workers]

    # --- guest steps ------------------------------------------------------------------------
    def access(self, access: Access) -> RealOutcome:
        """Perform one access on its vCPU and wait for the result."""
        return self.access_many([access])[0]

    def access_many(self, accesses: list[Access]) -> list[RealOutcome]:
        """Issue accesses on distinct vCPUs at once; wait for all; results in the same order."""
        if self._dead is not None:
            raise self._dead
        if len({a.vcpu for a in accesses}) != len(accesses):
            raise ValueError("access_many: at most one access per vCPU")
        for a in accesses:
            self._post(a)
        results: list[RealOutcome] = []
        deadline = time.monotonic() + self.timeout
        for a in accesses:
            w = self._workers[a.vcpu]
            try:
                res = w.results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                err = GuestTimeout(
                    f"vCPU {a.vcpu}: no result for {a} within {self.timeout:g} s; vCPUs stopped"
                )
                self._fail(err)
                raise err from None
            if res.error is not None:
                self._fail(res.error)
                raise res.error
            assert res.outcome is not None
            results.append(res.outcome)
        for a in accesses:
            if a.write and 0 <= a.gpa < self.layout.window:
                # The guest's walk set the PTE's dirty bit. Left set, a later *read* fault on this
                # page (after a zap) would be mapped writable and logged dirty: a shadow-paging
                # artefact of this guest's page tables, not a write. Keep D clear between steps.
                self.harness.write(self.layout.pte_offset(a.gpa), self.layout.pristine_pte(a.gpa))
        return results

    def _post(self, a: Access) -> None:
        if not 0 <= a.vcpu < len(self._workers):
            raise ValueError(f"vCPU {a.vcpu} does not exist ({len(self._workers)} here)")
        op = Op.access(a.write, a.size)
        self._write_command(a.vcpu, op, a.gpa, a.value)

    def touch(self, vcpu: int, gpa: int, count: int, stride: int = 4096,
              write: bool = False) -> RealOutcome:
        """Read (or write) one byte at ``count`` addresses ``stride`` apart in one step (no exit
        between)."""
        self.harness.write_u64(self.layout.mailbox_offset(vcpu) + MailboxField.STRIDE, stride)
        self._write_command(vcpu, Op.TOUCH_WRITE if write else Op.TOUCH, gpa, count)
        return self.wait(vcpu)

    def post_hang(self, vcpu: int) -> None:
        """Make ``vcpu``'s guest spin forever (to test the timeout path)."""
        self._write_command(vcpu, Op.HANG, 0, 0)

    def wait(self, vcpu: int) -> RealOutcome:
        """Wait for the result of a posted command (raises on timeout or a dead guest)."""
        w = self._workers[vcpu]
        try:
            res = w.results.get(timeout=self.timeout)
        except queue.Empty:
            err = GuestTimeout(f"vCPU {vcpu}: no result within {self.timeout:g} s; vCPUs stopped")
            self._fail(err)
            raise err from None
        if res.error is not None:
            self._fail(res.error)
            raise res.error
        assert res.outcome is not None
        return res.outcome

    def _write_command(self, vcpu: int, op: Op, gpa: int, value: int) -> None:
        w = self._workers[vcpu]
        base = self.layout.mailbox_offset(vcpu)
        self.harness.write_u64(base + MailboxField.OP, int(op))
        self.harness.write_u64(base + MailboxField.GPA, gpa)
        self.harness.write_u64(base + MailboxField.VALUE, value & (2**64 - 1))
        self._seq[vcpu] += 1
        w.started_ns = time.perf_counter_ns()
        # The sequence number last: the polling guest must never see a half-written command.
        self.harness.write_u64(base + MailboxField.SEQ, self._seq[vcpu])
        w.tokens.put(True)

    def _worker_loop(self, w: _Worker) -> None:
        # The kick signal stays blocked in this thread for its whole life: a kick that arrives
        # after the last KVM_RUN stays pending and dies with the thread, never reaching Python.
        signal.pthread_sigmask(signal.SIG_BLOCK, [KICK_SIGNAL])
        try:
            self._vcpu_loop(w)
        finally:
            with w.lock:
                w.running = False  # from now on nobody may signal this thread

    def _vcpu_loop(self, w: _Worker) -> None:
        mmio: list[MmioExit] = []
        while not self._stop.is_set():
            try:
                ex = w.vcpu.run()
            except KvmIoctlError as exc:
                w.results.put(_Result(error=GuestCrashed(w.index, None, f"KVM_RUN failed: {exc}")))
                return
            w.exits += 1
            if isinstance(ex, MmioExit):
                if ex.gpa == DOORBELL_DONE:
                    value = int.from_bytes(ex.data, "little")
                    elapsed = time.perf_counter_ns() - w.started_ns
                    w.results.put(_Result(RealOutcome(value, tuple(mmio), elapsed)))
                    mmio = []
                elif ex.gpa == DOORBELL_IDLE:
                    if not w.tokens.get():
                        return
                else:
                    mmio.append(ex)
                    if not ex.is_write:
                        w.vcpu.set_mmio_read_data(bytes(8))
                continue
            if isinstance(ex, SimpleExit) and ex.reason == ExitReason.INTR:
                continue  # a kick: the loop condition decides
            try:
                where = f" at rip {int(w.vcpu.get_regs().rip):#x}"
            except KvmIoctlError:
                where = ""
            w.results.put(_Result(error=GuestCrashed(w.index, ex, f"unexpected exit {ex}{where}")))
            return

    # --- teardown ---------------------------------------------------------------------------
    def _fail(self, err: GuestError) -> None:
        self._dead = err
        self._stop_workers()

    def _stop_workers(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.tokens.put(False)
        for w in self._workers:
            t = w.thread
            if t is None or t.ident is None:
                continue
            # Kick until the thread has left its loop: a kick that lands between two KVM_RUNs
            # stays pending (blocked) and the next KVM_RUN returns at once. Kicks are sent under
            # the worker's lock while it is still in its loop, so never to a finished thread.
            while True:
                with w.lock:
                    if not w.running:
                        break
                    w.vcpu.kick(t.ident)
                t.join(0.05)
            t.join()
            w.thread = None

    def close(self) -> None:
        """Stop the vCPU threads, close every fd, unmap all memory. Idempotent."""
        self._stop_workers()
        self._workers.clear()
        if self.vm is not None:
            self.vm.close()
            self.vm = None
        self.kvm.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
