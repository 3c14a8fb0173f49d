"""Tests of ``kvmmu check`` (src/kvmmu/cli/check.py), through the console entry point.

(Kept under tests/check/ with the package it drives; tests/cli/ belongs to the CLI's owner.)
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from kvmmu.check.distributed import CHECKPOINT_VERSION
from kvmmu.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["check", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_the_2014_race_exits_1_with_a_counterexample_and_a_replay(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--strategy", "generation-3.11+tagged-cache", "--vcpus", "1", "--updates", "1")
    assert code == 1
    assert "states explored:" in out and "schedules run:" in out and "states/s" in out
    assert "VIOLATION: stale-mmio-spte" in out
    assert "   1. vCPU0  enters the guest" in out
    assert "writes MMIO SPTE gfn 0x100" in out
    replay = next(line for line in out.splitlines() if line.startswith("Replay: "))
    argv = shlex.split(replay.removeprefix("Replay: "))
    code2, out2, _ = run(capsys, *argv[2:])
    assert code2 == 1
    assert "stale-mmio-spte" in out2
    steps = [line for line in out.splitlines() if line[:6].strip().rstrip(".").isdigit()]
    steps2 = [line for line in out2.splitlines() if line[:6].strip().rstrip(".").isdigit()]
    assert steps == steps2


def test_a_correct_strategy_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--strategy", "generation", "--vcpus", "1", "--updates", "2",
                       "--bound", "none")
    assert code == 0
    assert "no violation within the bound" in out
    assert "preemption bound none" in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--strategy", "generation+cache-without-gen", "--vcpus", "1",
                       "--updates", "1", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["result"] == "violation"
    assert doc["stats"]["states"] > 0 and doc["stats"]["schedules"] > 0
    assert doc["counterexample"]["findings"][0]["kind"] == "stale-mmio-cache"
    assert doc["counterexample"]["replay"].startswith("kvmmu check --strategy "
                                                      "generation+cache-without-gen")
    assert doc["minimised"]["to_steps"] == len(doc["counterexample"]["steps"])


def test_random_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--strategy", "generation", "--random", "20", "--seed", "4",
                       "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["mode"] == "random" and doc["seed"] == 4 and doc["stats"]["schedules"] == 20
    assert doc["complete"] is False


def test_a_scenario_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "wrap.toml"
    p.write_text("""
name = "wrap"
[vm]
mmio_gen_bits = 2
slot_zap = "slot"
[[slots]]
slot = 0
gpa = 0
size = 0x10000
userspace_addr = 0x7f0000000000
[[vcpus]]
accesses = [{ gpa = 0x100000 }]
[[updates]]
slot = 1
gpa = 0x100000
size = 0x1000
userspace_addr = 0x7f0000100000
[[updates]]
slot = 0
gpa = 0
size = 0
[[updates]]
slot = 1
gpa = 0x100000
size = 0x1000
userspace_addr = 0x7f0000100000
flags = 1
""")
    code, out, _ = run(capsys, "--strategy", "generation+no-wrap-zap", "--scenario", str(p),
                       "--vcpus", "1", "--updates", "3", "--bound", "0")
    assert code == 1
    assert "scenario wrap" in out and "stale-mmio-spte" in out
    assert f"--scenario {p}" in out
    code, out, _ = run(capsys, "--strategy", "generation", "--scenario", str(p), "--vcpus", "1",
                       "--updates", "3", "--bound", "0")
    assert code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "nope"], "unknown strategy 'nope'; choose from zap-all-3.9"),
    (["--vcpus", "0"], "--vcpus must be 1..8"),
    (["--updates", "7"], "--updates must be 0..3"),
    (["--bound", "-1"], "is not a preemption bound"),
    (["--slot-zap", "x"], "'x' is not one of 'all', 'slot', 'all-slow'"),
    (["--gen-bits", "1"], "--gen-bits: mmio_gen_bits must be 2.."),
    (["--replay", "0:3,zz:1"], "--replay: schedule entry 'zz:1': thread must be one of 0, 1, vmm"),
    (["--replay", "vmm:500"], "the schedule does not fit this configuration"),
    (["--scenario", "/nonexistent.toml"], "/nonexistent.toml: cannot read"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                         message: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""


def test_a_time_limit_stops_the_search_and_the_summary_says_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--strategy", "generation", "--vcpus", "2", "--updates", "2",
                       "--bound", "2", "--time-limit", "0.3", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["stats"]["stopped"] == "time limit" and doc["complete"] is False
    assert doc["stats"]["queue"] > 0 and doc["stats"]["states"] > 0
    code, out, _ = run(capsys, "--strategy", "generation", "--vcpus", "2", "--updates", "2",
                       "--bound", "2", "--time-limit", "0.3")
    assert "stopped by the time limit: the search is not exhaustive" in out


def test_the_reductions_can_be_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--strategy", "generation", "--vcpus", "3", "--updates", "1", "--accesses", "1",
            "--bound", "1", "--json")
    _, out, _ = run(capsys, *args)
    reduced = json.loads(out)["stats"]
    _, out, _ = run(capsys, *args, "--no-reduce", "--no-symmetry")
    plain = json.loads(out)["stats"]
    assert reduced["states"] < plain["states"]  # vCPU0 and vCPU2 run the same script
    assert reduced["sleep_pruned"] > 0 and plain["sleep_pruned"] == 0
    assert reduced["schedules"] < plain["schedules"]


def test_the_distributed_search_runs_on_a_local_cluster_and_checkpoints(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    ckpt = tmp_path / "search.json"
    args = ("--strategy", "generation", "--vcpus", "1", "--updates", "1", "--bound", "1",
            "--distributed", "--workers", "2", "--prefix-depth", "6", "--checkpoint", str(ckpt))
    code, out, _ = run(capsys, *args, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["mode"] == "distributed" and doc["result"] == "ok" and doc["complete"]
    saved = json.loads(ckpt.read_text())
    assert saved["pending"] == [] and sum(map(len, saved["shards"])) == doc["stats"]["states"]


def test_a_checkpoint_of_another_configuration_is_refused(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ckpt = tmp_path / "search.json"
    ckpt.write_text(json.dumps({"version": CHECKPOINT_VERSION, "config": "something else",
                                "pending": [], "shards": []}))
    code, _, err = run(capsys, "--vcpus", "1", "--distributed", "--checkpoint", str(ckpt))
    assert code == 2
    assert "--checkpoint" in err and "another configuration" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("version", [1, 2])
def test_a_checkpoint_of_an_older_key_is_refused(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, version: int) -> None:
    # Version 1 shards held (world, scheduler context) keys; version 2 worlds keyed without the
    # active list's order; version 3 keeps it.  Older keys would never match: refused.
    ckpt = tmp_path / "search.json"
    ckpt.write_text(f'{{"version": {version}, "config": "x", "pending": [], "shards": []}}')
    code, _, err = run(capsys, "--vcpus", "1", "--distributed", "--checkpoint", str(ckpt))
    assert code == 2 and CHECKPOINT_VERSION == 3
    assert f"version {CHECKPOINT_VERSION}" in err and len(err.strip().splitlines()) == 1
