"""Hundreds of bad or unusual command lines, tried as a new user would (issue 11).

Every case runs the real ``kvmmu`` entry point (:func:`kvmmu.cli.main`) in this process, so that
the whole table takes seconds; a few also run as a subprocess (``python -m kvmmu``) to check what
a shell sees. Each asserts: the expected exit status (2 for bad input), at most one line on stderr
and no traceback, and that nothing in the working folder changed (no file created, deleted,
rewritten or re-permissioned: the output folder is never reached for bad input). The peak memory
of the test process and of the subprocesses stays under the documented bound
(:data:`kvmmu.sim.budget.DEFAULT_BUDGET`, 1 GiB).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmmu.cli import main
from kvmmu.sim.budget import DEFAULT_BUDGET

GOOD_HEAD = 'name = "t"\ndescription = "d"\nduration = "100us"\n[guest]\nvcpus = 2\nmemory = "16MiB"\n'

#: Bad scenario files for ``kvmmu run``: (file name, content, text the error must contain).
BAD_SCENARIOS: list[tuple[str, str, str]] = [
    ("syntax.toml", "[guest\n", "TOML"),
    ("empty.toml", "", "what kind of scenario"),
    ("binary.toml", "\x00\x01\x02", "t"),
    ("vcpus0.toml", GOOD_HEAD.replace("vcpus = 2", "vcpus = 0"), "guest.vcpus"),
    ("vcpus-big.toml", GOOD_HEAD.replace("vcpus = 2", "vcpus = 100000"), "guest.vcpus"),
    ("vcpus-str.toml", GOOD_HEAD.replace("vcpus = 2", 'vcpus = "two"'), "guest.vcpus"),
    ("vcpus-float.toml", GOOD_HEAD.replace("vcpus = 2", "vcpus = 2.5"), "guest.vcpus"),
    ("mem0.toml", GOOD_HEAD.replace('"16MiB"', "0"), "guest.memory"),
    ("mem-huge.toml", GOOD_HEAD.replace('"16MiB"', '"2TiB"'), "guest.memory"),
    ("mem-neg.toml", GOOD_HEAD.replace('"16MiB"', "-4096"), "guest.memory"),
    ("mem-unit.toml", GOOD_HEAD.replace('"16MiB"', '"16 parsecs"'), "guest.memory"),
    ("mem-odd.toml", GOOD_HEAD.replace('"16MiB"', "4097"), "guest.memory"),
    ("mem-inf.toml", GOOD_HEAD.replace('"16MiB"', "inf"), "guest.memory"),
    ("duration0.toml", GOOD_HEAD.replace('"100us"', "0"), "duration"),
    ("duration-neg.toml", GOOD_HEAD.replace('"100us"', '"-1ms"'), "duration"),
    ("duration-nan.toml", GOOD_HEAD.replace('"100us"', "nan"), "duration"),
    ("unknown-top.toml", GOOD_HEAD + "colour = 1\n", "colour"),
    ("unknown-guest.toml", GOOD_HEAD + "cpus = 1\n", "guest.cpus"),
    ("think0.toml", GOOD_HEAD + "[vcpu]\nthink = 0\n", "vcpu.think"),
    ("ws0.toml", GOOD_HEAD + "[vcpu]\nworking_set = 0\n", "vcpu.working_set"),
    ("active.toml", GOOD_HEAD + "[vcpu]\nactive = 3\n", "vcpu.active"),
    ("active-neg.toml", GOOD_HEAD + "[vcpu]\nactive = -1\n", "vcpu.active"),
    ("frac.toml", GOOD_HEAD + "[vcpu]\nwrite_fraction = 1.5\n", "vcpu.write_fraction"),
    ("frac-nan.toml", GOOD_HEAD + "[vcpu]\nwrite_fraction = nan\n", "vcpu.write_fraction"),
    ("mmio-nodev.toml", GOOD_HEAD + "[vcpu]\nmmio_fraction = 0.5\n", "vcpu.mmio_fraction"),
    ("rom-norom.toml", GOOD_HEAD + "[vcpu]\nrom_fraction = 0.5\n", "rom_fraction"),
    ("pattern.toml", GOOD_HEAD + "[vcpu]\npattern = 'spiral'\n", "vcpu.pattern"),
    (
        "dev-in-ram.toml",
        GOOD_HEAD + "[[devices]]\nname = 'd'\ngpa = '4GiB'\nsize = 4096\n",
        "overlaps guest RAM",
    ),
    (
        "dev-inf.toml",
        GOOD_HEAD + "[[devices]]\nname = 'd'\ngpa = 0xfe000000\nsize = 4096\nweight = inf\n",
        "devices[0].weight",
    ),
    (
        "dev-zero.toml",
        GOOD_HEAD + "[[devices]]\nname = 'd'\ngpa = 0xfe000000\nsize = 4096\nweight = 0\n",
        "devices[0].weight",
    ),
    (
        "dev-size0.toml",
        GOOD_HEAD + "[[devices]]\nname = 'd'\ngpa = 0xfe000000\nsize = 0\n",
        "devices[0].size",
    ),
    (
        "dev-overlap.toml",
        GOOD_HEAD
        + "[[devices]]\nname = 'a'\ngpa = 0xfe000000\nsize = 8192\n"
        + "[[devices]]\nname = 'b'\ngpa = 0xfe001000\nsize = 4096\n",
        "overlaps device",
    ),
    (
        "dev-beyond.toml",
        GOOD_HEAD + "[[devices]]\nname = 'd'\ngpa = 0xffffffffffff0000\nsize = 4096\n",
        "devices[0].gpa",
    ),
    ("slot-overlap.toml", GOOD_HEAD + "[[slots]]\nid = 5\ngpa = '4GiB'\nsize = 4096\n", "overlaps"),
    ("slot-dup.toml", GOOD_HEAD + "[[slots]]\nid = 1\ngpa = 0\nsize = 4096\n", "unique"),
    ("slot-align.toml", GOOD_HEAD + "[[slots]]\nid = 5\ngpa = 1\nsize = 4096\n", "aligned"),
    ("slot-size.toml", GOOD_HEAD + "[[slots]]\nid = 5\ngpa = 0\nsize = 100\n", "slots[0].size"),
    ("slot-id.toml", GOOD_HEAD + "[[slots]]\nid = 99999\ngpa = 0\nsize = 4096\n", "slots[0].id"),
    ("vmm-op.toml", GOOD_HEAD + "[[vmm]]\nop = 'explode'\nslot = 2\n", "vmm[0].op"),
    ("vmm-noslot.toml", GOOD_HEAD + "[[vmm]]\nop = 'delete'\n", "vmm[0].slot"),
    ("vmm-create.toml", GOOD_HEAD + "[[vmm]]\nop = 'create'\nslot = 2\n", "vmm[0].gpa"),
    ("vmm-move.toml", GOOD_HEAD + "[[vmm]]\nop = 'move'\nslot = 2\n", "vmm[0].to"),
    ("vmm-repeat.toml", GOOD_HEAD + "[[vmm]]\nop = 'delete'\nslot = 2\nrepeat = 5\n", "vmm[0].every"),
    ("vmm-repeat0.toml", GOOD_HEAD + "[[vmm]]\nop = 'delete'\nslot = 2\nrepeat = 0\n", "vmm[0].repeat"),
    ("vmm-at.toml", GOOD_HEAD + "[[vmm]]\nop = 'delete'\nslot = 2\nat = '-5us'\n", "vmm[0].at"),
    (
        "random-mix.toml",
        GOOD_HEAD
        + "[random]\nops = 3\nevery = '1us'\nslots = {first = 10, count = 2}\ngpa = '8GiB'\n"
        + "size = '2MiB'\nmix = {create = inf}\n",
        "random.mix.create",
    ),
    (
        "random-mix0.toml",
        GOOD_HEAD
        + "[random]\nops = 3\nevery = '1us'\nslots = {first = 10, count = 2}\ngpa = '8GiB'\n"
        + "size = '2MiB'\nmix = {create = 0}\n",
        "random.mix",
    ),
    (
        "random-ops0.toml",
        GOOD_HEAD
        + "[random]\nops = 0\nevery = '1us'\nslots = {first = 10, count = 2}\ngpa = '8GiB'\n"
        + "size = '2MiB'\n",
        "random.ops",
    ),
    ("page.toml", GOOD_HEAD.replace("vcpus = 2", "vcpus = 2\npage_size = 8192"), "guest.page_size"),
    ("phys.toml", GOOD_HEAD.replace("vcpus = 2", "vcpus = 2\nphys_bits = 99"), "guest.phys_bits"),
    (  # 512 vCPUs sweeping 1 TiB for 5 s of guest time: far more memory than any host here
        "huge.toml",
        GOOD_HEAD.replace("vcpus = 2", "vcpus = 512").replace('"16MiB"', '"1TiB"').replace('"100us"', '"5s"')
        + "[vcpu]\nworking_set = '2GiB'\n",
        "would need about",
    ),
    (
        "vmm-in-ram.toml",
        GOOD_HEAD + "[[vmm]]\nop = 'create'\nslot = 5\ngpa = '4GiB'\nsize = 4096\n",
        "EEXIST",
    ),
    ("vmm-ghost.toml", GOOD_HEAD + "[[vmm]]\nop = 'delete'\nslot = 7\n", "slot 7 is neither"),
    ("vmm-size.toml", GOOD_HEAD + "[[vmm]]\nop = 'create'\nslot = 5\ngpa = 0\nsize = 0\n", "vmm[0].size"),
    ("steps-kind.toml", '[[step]]\nop = "read"\ngpa = 0\n', "takes a workload scenario"),
]

#: Bad cost profiles: (file name, content, text the error must contain).
BAD_COSTS: list[tuple[str, str, str]] = [
    ("c-huge.toml", "[costs]\nvmexit_ns = 100000000000000000000000\n", "costs.vmexit_ns"),
    ("c-sec.toml", "[costs]\nvmexit_ns = 1000000001\n", "costs.vmexit_ns"),
    ("c-neg.toml", "[costs]\nvmexit_ns = -1\n", "costs.vmexit_ns"),
    ("c-float.toml", "[costs]\nvmexit_ns = 1e23\n", "costs.vmexit_ns"),
    ("c-inf.toml", "[costs]\nvmexit_ns = inf\n", "costs.vmexit_ns"),
    ("c-nan.toml", "[costs]\nvmexit_ns = nan\n", "costs.vmexit_ns"),
    ("c-str.toml", "[costs]\nvmexit_ns = 'fast'\n", "costs.vmexit_ns"),
    ("c-bool.toml", "[costs]\nvmexit_ns = true\n", "costs.vmexit_ns"),
    ("c-name.toml", "[costs]\nvmexitt_ns = 1\n", "unknown cost name"),
    ("c-table.toml", "[costz]\n", "unknown table"),
    ("c-none.toml", "[source]\nx = 'y'\n", "missing table"),
    ("c-syntax.toml", "[costs\n", "TOML"),
    ("c-source.toml", "[costs]\n[source]\nx = 1\n", "source.x"),
]

#: Command lines that are bad input wherever they run: (argv, text the error must contain).
BAD: list[tuple[list[str], str]] = [
    # the group
    (["--bogus"], "--bogus"),
    (["nosuchcommand"], "nosuchcommand"),
    (["Run"], "Run"),
    (["run", "--bogus"], "--bogus"),
    # run: scenario and options
    (["run", "no-such-scenario"], "no-such-scenario"),
    (["run", "missing.toml"], "missing.toml"),
    (["run", "a-folder"], "a-folder"),
    (["run", ""], ""),
    (["run", "boot", "extra"], "extra"),
    (["run", "-s", "generashun"], "generashun"),
    (["run", "-s", ""], "-s"),
    (["run", "-s", "generation+"], "unknown variant"),
    (["run", "-s", "generation+no-such-variant"], "no-such-variant"),
    (["run", "-s"], "-s"),
    (["run", "--vcpus", "0"], "--vcpus"),
    (["run", "--vcpus", "-1"], "--vcpus"),
    (["run", "--vcpus", "513"], "--vcpus"),
    (["run", "--vcpus", "abc"], "--vcpus"),
    (["run", "--vcpus", "1e3"], "--vcpus"),
    (["run", "--vcpus", "2.5"], "--vcpus"),
    (["run", "--vcpus", ""], "--vcpus"),
    (["run", "--memory", "0"], "--memory"),
    (["run", "--memory", "-1"], "--memory"),
    (["run", "--memory", "2TiB"], "--memory"),
    (["run", "--memory", "lots"], "--memory"),
    (["run", "--memory", "1.5KiB"], "--memory"),
    (["run", "--memory", "4097"], "memory"),
    (["run", "--memory", "inf"], "--memory"),
    (["run", "--memory", "nan"], "--memory"),
    (["run", "--memory", ""], "--memory"),
    (["run", "--memory", "1e12"], "--memory"),
    (["run", "--memory", "99999999999999999999999"], "--memory"),
    (["run", "--seed", "abc"], "--seed"),
    (["run", "--seed", "1.5"], "--seed"),
    (["run", "--slot-zap", "some"], "--slot-zap"),
    (["run", "--slot-zap", "all-slow"], "--slot-zap"),
    (["run", "--mmu", "ept"], "--mmu"),
    (["run", "-s", "zap-all-3.9", "--mmu", "tdp"], "--mmu tdp"),
    (["run", "--costs", "missing.toml"], "missing.toml"),
    (["run", "--costs", "a-folder"], "a-folder"),
    (["run", "--time-limit", "0"], "--time-limit"),
    (["run", "--time-limit", "-1"], "--time-limit"),
    (["run", "--time-limit", "nan"], "--time-limit"),
    (["run", "--time-limit", "inf"], "--time-limit"),
    (["run", "--time-limit", "soon"], "--time-limit"),
    (["run", "--out", ""], "--out"),
    (["run", "--out", " "], "--out"),
    (["run", "--out", "."], "--out"),
    (["run", "--out", ".."], "--out"),
    (["run", "--out", "./"], "--out"),
    (["run", "--out", "a-folder/.."], "--out"),
    (["run", "--out", "/proc/x"], "/proc"),
    (["run", "--out", "/proc/self/x"], "--out"),
    (["run", "--out", "/dev/null"], "--out"),
    (["run", "--out", "/"], "--out"),
    (["run", "--out", "results"], "results"),
    (["run", "--out", "notes.txt"], "notes.txt"),
    (["run", "--out", "notes.txt/sub"], "notes.txt"),
    (["run", "--out", "link"], "symbolic link"),
    (["run"], "kvmmu-out"),  # the default folder's parent exists as a file
    (["run", "vga-bank-switch", "-s", "generation"], "kvmmu-out"),
    # plot
    (["plot", "nosuchfigure"], "nosuchfigure"),
    (["plot", "--workers", "0"], "--workers"),
    (["plot", "--workers", "65"], "--workers"),
    (["plot", "--workers", "x"], "--workers"),
    (["plot", "-s", "nope"], "nope"),
    (["plot", "--costs", "missing.toml"], "missing.toml"),
    (["plot", "--out", ""], "--out"),
    (["plot", "--out", "."], "--out"),
    (["plot", "--out", ".."], "--out"),
    (["plot", "--out", "/proc/x"], "/proc"),
    (["plot", "--out", "results"], "results"),
    (["plot", "--out", "notes.txt"], "notes.txt"),
    (["plot", "--bogus"], "--bogus"),
    (["plot", "--quick"], "kvmmu-out"),
    (["plot", "--time-limit", "nan"], "--time-limit"),
    (["plot", "--time-limit", "0"], "--time-limit"),
    (["plot", "--time-limit", "-3"], "--time-limit"),
    # diff: every mode checks its arguments before /dev/kvm
    (["diff"], "exactly one"),
    (["diff", "--random", "1", "--errno", "1"], "exactly one"),
    (["diff", "missing.toml"], "missing.toml"),
    (["diff", "a-folder"], "a-folder"),
    (["diff", "syntax.toml"], "TOML"),
    (["diff", "--random", "0"], "--random"),
    (["diff", "--random", "-1"], "--random"),
    (["diff", "--random", "x"], "--random"),
    (["diff", "--errno", "0"], "--errno"),
    (["diff", "--errno", "nan"], "--errno"),
    (["diff", "--random", "1", "--timeout", "nan"], "--timeout"),
    (["diff", "--random", "1", "--timeout", "inf"], "--timeout"),
    (["diff", "--random", "1", "--timeout", "-inf"], "--timeout"),
    (["diff", "--random", "1", "--timeout", "0"], "--timeout"),
    (["diff", "--random", "1", "--timeout", "-5"], "--timeout"),
    (["diff", "--random", "1", "--timeout", "1e9"], "--timeout"),
    (["diff", "--random", "1", "--timeout", "soon"], "--timeout"),
    (["diff", "--random", "1", "--strategy", "nope"], "nope"),
    (["diff", "--random", "1", "--strategy", ""], "strategy"),
    (["diff", "--random", "1", "--context", "-1"], "--context"),
    (["diff", "--random", "1", "--seed", "x"], "--seed"),
    (["diff", "--random", "1", "--save-failing", ""], "--save-failing"),
    (["diff", "--random", "1", "--save-failing", "/proc/x"], "/proc"),
    (["diff", "--random", "1", "--save-failing", "notes.txt"], "notes.txt"),
    (["diff", "--errno", "1", "--save-failing", "out"], "--random"),
    (["diff", "--bogus"], "--bogus"),
    # calibrate: the destination is checked before anything is measured
    (["calibrate", "--out", "/proc/x"], "/proc"),
    (["calibrate", "--out", ""], "--out"),
    (["calibrate", "--out", "."], "--out"),
    (["calibrate", "--out", ".."], "--out"),
    (["calibrate", "--out", "a-folder"], "a-folder"),
    (["calibrate", "--out", "a-folder/"], "a-folder"),
    (["calibrate", "--out", "nodir/p.toml"], "nodir"),
    (["calibrate", "--out", "notes.txt"], "notes.txt"),
    (["calibrate", "--out", "notes.txt/p.toml"], "notes.txt"),
    (["calibrate", "--out", "/dev/null"], "/dev/null"),
    (["calibrate", "--runs", "0"], "--runs"),
    (["calibrate", "--runs", "101"], "--runs"),
    (["calibrate", "--runs", "x"], "--runs"),
    (["calibrate", "--rounds", "0"], "--rounds"),
    (["calibrate", "--rounds", "21"], "--rounds"),
    (["calibrate", "--rounds", "x"], "--rounds"),
    (["calibrate", "--bogus"], "--bogus"),
    # check: arguments only (the search itself is the explorer's)
    (["check", "--strategy", "nope"], "nope"),
    (["check", "--vcpus", "x"], "--vcpus"),
    (["check", "--bound", "x"], "--bound"),
    (["check", "--bound", "-1"], "--bound"),
    (["check", "--depth", "0"], "--depth"),
    (["check", "--random", "0"], "--random"),
    (["check", "--scenario", "missing.toml"], "missing.toml"),
    (["check", "--scenario", "syntax.toml"], "syntax.toml"),
    (["check", "--slot-zap", "x"], "--slot-zap"),
    (["check", "--mmu", "ept"], "--mmu"),
    (["check", "-s", "generation-3.18", "--mmu", "tdp"], "--mmu tdp"),
    (["check", "--bogus"], "--bogus"),
    (["check", "--time-limit", "0"], "--time-limit"),
    (["check", "--time-limit", "nan"], "--time-limit"),
    (["check", "--budget", "nan"], "--budget"),
    (["check", "--budget", "inf"], "--budget"),
    (["check", "--time-limit", "x"], "--time-limit"),
    # the other commands' usage errors
    (["capture", "--bogus"], "--bogus"),
    (["validate", "--bogus"], "--bogus"),
    (["validate", "missing-capture"], "missing-capture"),
    (["capture", "--timeout", "nan", "--", "true"], "--timeout"),
    (["capture", "--timeout", "inf", "--", "true"], "--timeout"),
    (["capture", "--out", "/proc/x", "--", "true"], "/proc"),
    (["capture", "--out", "results", "--", "true"], "results"),
    (["capture"], "CMD"),
    (["replay"], "CAPTURE"),
    (["replay", "missing-capture"], "missing-capture"),
    (["replay", "notes.txt"], "notes.txt"),
    (["replay", "a-folder"], "a-folder"),
    (["validate", "notes.txt"], "notes.txt"),
    (["validate", "a-folder"], "a-folder"),
    (["strategies", "--bogus"], "--bogus"),
    (["strategies", "--json", "extra"], "extra"),
    # memslot-perf (the selftest's own messages) and reproduce
    (["memslot-perf", "-f", "7"], "First test"),
    (["memslot-perf", "-f", "3", "-e", "1"], "First test"),
    (["memslot-perf", "-s", "0"], "Slot count cap"),
    (["memslot-perf", "-s", "-5"], "Slot count cap"),
    (["memslot-perf", "-r", "0"], "Runs per test"),
    (["memslot-perf", "-l", "nan"], "-l"),
    (["memslot-perf", "--strategy", "nope"], "nope"),
    (["memslot-perf", "--memslots", "list"], "list"),
    (["memslot-perf", "--costs", "notes.txt"], "notes.txt"),
    (["reproduce", "--row", "nope"], "nope"),
    (["reproduce", "--costs", "missing.toml"], "missing.toml"),
    (["reproduce", "--costs", "missing.toml", "--calibrate"], "--calibrate"),
    (["reproduce", "--figure", "notes.txt"], "notes.txt"),
    (["reproduce", "--figure", "/proc/x.png"], "/proc"),
]

COMMANDS = ("run", "plot", "diff", "calibrate", "check", "capture", "validate", "replay", "strategies",
            "memslot-perf", "reproduce")

#: Unusual command lines that must succeed without touching anything: (argv, text in stdout).
FINE: list[tuple[list[str], str]] = [
    ([], "Start with"),
    (["--help"], "Start with"),
    (["-h"], "Start with"),
    (["--version"], "version"),
    *[([cmd, "--help"], "Usage") for cmd in COMMANDS],
    *[([cmd, "-h"], "Usage") for cmd in COMMANDS],
]


def _cases() -> Iterator[tuple[list[str], int, str]]:
    for argv, needle in BAD:
        yield argv, 2, needle
    for name, _content, needle in BAD_SCENARIOS:
        yield ["run", name], 2, needle
    for name, _content, needle in BAD_COSTS:
        yield ["run", "--costs", name], 2, needle
        yield ["plot", "--costs", name], 2, needle
    for argv, needle in FINE:
        yield argv, 0, needle


CASES = list(_cases())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder such as a user has: their files, a foreign results folder, bad inputs."""
    d = tmp_path_factory.mktemp("user")
    (d / "notes.txt").write_text("my notes")
    (d / "kvmmu-out").write_text("a file where kvmmu's default output folder would go")
    (d / "a-folder").mkdir()
    (d / "results").mkdir()
    (d / "results" / "thesis.tex").write_text("years of work")
    (d / "link").symlink_to(d / "a-folder")
    for name, content, _ in BAD_SCENARIOS + BAD_COSTS:
        (d / name).write_text(content)
    (d / "a-folder").chmod(0o751)
    return d


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, digest)
    return out


def test_there_are_at_least_200_command_lines() -> None:
    assert len(CASES) >= 200
    assert len({tuple(a) for a, _, _ in CASES}) == len(CASES)  # no duplicates padding the count


@pytest.mark.parametrize(
    ("argv", "status", "needle"), CASES, ids=[" ".join(a) or "(none)" for a, _, _ in CASES]
)
def test_command_line(
    argv: list[str],
    status: int,
    needle: str,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("COLUMNS", "100")
    before = _snapshot(workdir)
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    assert "Traceback" not in err + out, err
    assert code == status, (code, err, out[-500:])
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, lines
        assert needle in lines[0], lines[0]
    else:
        assert needle in out
    assert _snapshot(workdir) == before, "a bad command line touched the user's folder"


#: A few of the same through a real process, as a shell runs them.
SUBPROCESS = [
    (["run", "--out", "/proc/x"], 2),
    (["run", "--out", "results"], 2),
    (["run", "c-huge.toml"], 2),
    (["run", "dev-inf.toml"], 2),
    (["diff", "--random", "1", "--timeout", "nan"], 2),
    (["calibrate", "--out", "/proc/x"], 2),
    (["run", "huge.toml"], 2),
    (["--help"], 0),
]


@pytest.mark.parametrize(("argv", "status"), SUBPROCESS, ids=[" ".join(a) for a, _ in SUBPROCESS])
def test_subprocess(argv: list[str], status: int, workdir: Path) -> None:
    before = _snapshot(workdir)
    with subprocess.Popen(
        [sys.executable, "-m", "kvmmu", *argv],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    ) as proc:
        out, err = proc.communicate(timeout=120)
        # wait4 gives this child's own peak RSS (ru_maxrss, KiB), not the whole test session's.
        _pid, wstatus, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, 0, None)
    code = proc.returncode if proc.returncode is not None else os.waitstatus_to_exitcode(wstatus)
    assert code == status, err
    assert "Traceback" not in err + out
    if status == 2:
        assert len(err.strip().splitlines()) == 1, err
    assert _snapshot(workdir) == before
    if usage is not None:
        assert usage.ru_maxrss * 1024 < DEFAULT_BUDGET
