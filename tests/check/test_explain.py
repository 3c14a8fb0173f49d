"""Tests of kvmmu.check.explain: counterexamples told in kernel terms, with trace and replay."""

from __future__ import annotations

import json
import shlex

from kvmmu.check.explain import Counterexample, ExplainedStep, explain, fmt_gen
from kvmmu.check.explore import explore
from kvmmu.check.minimize import minimise
from kvmmu.check.schedule import parse_schedule
from kvmmu.check.world import CheckConfig, World
from kvmmu.memslots import KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS


def counterexample(config: CheckConfig) -> Counterexample:
    found = explore(config)
    assert found.failure is not None
    m = minimise(config, found.failure.schedule, found.failure.findings[0].kind)
    return explain(config, m.run.executed)


def first(steps: tuple[ExplainedStep, ...], event: str, thread: str | None = None,
          after: int = 0) -> ExplainedStep:
    return next(s for s in steps if s.event == event and s.number > after
                and (thread is None or s.thread == thread))


def test_the_2014_race_has_the_shape_of_the_design_note() -> None:
    # vCPU looks up the old memslots, the update publishes the new generation, the vCPU reads
    # the new generation and writes the MMIO SPTE with it; afterwards the stale SPTE matches.
    ce = counterexample(CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1))
    steps = ce.steps
    lookup = first(steps, "memslot-lookup", "vCPU0")
    publish = first(steps, "publish", "VMM")
    read = first(steps, "read-generation", "vCPU0")
    mark = first(steps, "mark-mmio-spte", "vCPU0")
    assert lookup.number < publish.number < read.number < mark.number
    assert lookup.gfn == read.gfn == mark.gfn == 0x100
    assert lookup.found is False
    assert lookup.gen is not None and publish.gen == lookup.gen + 1
    assert read.gen == mark.gen == publish.gen
    assert f"looks gfn 0x100 up in memslots gen {lookup.gen:#x}: not found" in lookup.text
    assert f"writes MMIO SPTE gfn 0x100 gen {publish.gen:#x}" in mark.text
    assert any("mark_mmio_spte: sptep:" in line and f"gen {publish.gen:x}" in line
               for line in mark.trace)
    assert [f.kind for f in ce.findings] == ["stale-mmio-spte"]
    assert f"spte-gen {publish.gen:#x}) still matches" in ce.findings[0].text
    assert ce.preemptions == 1
    assert steps[-1].thread == "VMM" and "the ioctl returns (CREATE)" in steps[-1].text


def test_the_replay_command_reproduces_the_counterexample() -> None:
    config = CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1)
    ce = counterexample(config)
    argv = shlex.split(ce.replay_command)
    assert argv[:2] == ["kvmmu", "check"]
    assert argv[argv.index("--strategy") + 1] == "generation-3.11+tagged-cache"
    schedule = parse_schedule(World(config), argv[argv.index("--replay") + 1])
    again = explain(config, schedule)
    assert again.steps == ce.steps and again.findings == ce.findings


def test_render_numbers_the_steps_and_ends_with_the_replay_command() -> None:
    ce = counterexample(CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1))
    lines = ce.render().splitlines()
    assert lines[0] == f"Counterexample: {len(ce.steps)} steps, 1 preemption"
    assert lines[1].startswith("   1. vCPU0  enters the guest: read of gpa 0x100000")
    assert any(line.strip().startswith("kvmmu-1 [000]") for line in lines)
    assert lines[-1] == f"Replay: {ce.replay_command}"
    assert "Violation after step" in ce.render(trace=False)
    assert not any("kvm_mmu_get_page" in line for line in ce.render(trace=False).splitlines())


def test_json_form() -> None:
    ce = counterexample(CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1))
    doc = json.loads(json.dumps(ce.to_json()))
    assert doc["schedule"] == ce.schedule_text
    assert doc["findings"][0]["kind"] == "stale-mmio-spte"
    assert [s["event"] for s in doc["steps"]] == [s.event for s in ce.steps]


def test_the_wrap_window_of_2014_kernels_is_told_step_by_step() -> None:
    # 2014 kernels made the new (wrapped) generation valid before the wrap zap; with a 2-bit
    # generation a vCPU matches an MMIO SPTE created a full wrap ago in between.  The schedule is
    # one the explorer found and the minimiser shortened (44 steps).
    schedule = "0:17,1:10,vmm:8,1:9"
    config = CheckConfig("generation-3.18", vcpus=2, mmio_gen_bits=2, updates=3)
    ce = explain(config, parse_schedule(World(config), schedule))
    assert ce.findings and ce.findings[0].kind == "stale-mmio"
    check = next(s for s in ce.steps if s.event == "check-generation" and "valid: emulate" in s.text)
    write = [s for s in ce.steps if s.event == "write-generation" and s.number < check.number][-1]
    spte_gen = next(s for s in ce.steps if s.event == "mark-mmio-spte").gen
    assert write.gen is not None and spte_gen is not None
    # different generations, equal in the 2 compared bits (the 2014 layout drops bit 0)
    assert write.gen != spte_gen and (write.gen ^ spte_gen) & 0b10 == 0
    assert not any(s.event == "zap-all-fast" and write.number < s.number < check.number
                   for s in ce.steps)
    # Modern kernels zap before the generation becomes valid (152482580a1b): the explorer finds
    # no such schedule for them (test_explore.py, test_generation_passes_across_the_wrap_...).


def test_a_passing_replay_is_explained_too() -> None:
    ce = explain(CheckConfig("generation", vcpus=1, updates=1), [])
    assert ce.findings == ()
    assert "No violation" in ce.render()
    events = [s.event for s in ce.steps]
    assert events.count("begin") == 3 and "publish" in events and "write-generation" in events


def test_generations_in_progress_are_shown() -> None:
    assert fmt_gen(5) == "0x5"
    assert fmt_gen(4 | KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS) == "0x4|UPDATE_IN_PROGRESS"
