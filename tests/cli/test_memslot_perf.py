"""Tests of kvmmu.cli.memslot_perf: the selftest's flags and lines, JSON, bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kvmmu.cli import cli, main


def test_prints_the_selftests_lines_for_the_chosen_tests() -> None:
    result = CliRunner().invoke(cli, ["memslot-perf", "-s", "32", "-f", "4", "-e", "4", "-l", "1",
                                      "--memslots", "array"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("# kvmmu model of memslot_perf_test: generation, memslots: sorted")
    assert lines[1] == "Testing move inactive area performance with 1 runs, 1 seconds each"
    assert lines[2].startswith("Test took ") and " for slot setup + " in lines[2]
    assert lines[3].startswith("Done ") and lines[3].endswith(" each")
    assert lines[-1].startswith("Best slot setup time for the whole test area was ")


def test_json_gives_the_figures() -> None:
    result = CliRunner().invoke(cli, ["memslot-perf", "-s", "16", "-f", "2", "-e", "2", "-l", "1",
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["memslots"] == "trees (5.17+)"
    (run,) = data["runs"]
    assert run["name"] == "unmap chunked" and run["slots"] == 15
    assert data["best_runtime_s"]["2"] == run["avg_s"] > 0


@pytest.mark.parametrize("argv", [["-s", "0"], ["-e", "6"], ["-f", "3", "-e", "2"], ["-r", "0"],
                                  ["--strategy", "nope"], ["--costs", "/nonexistent.toml"]])
def test_bad_input_is_one_line_and_status_2(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["memslot-perf", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kvmmu: error: ") and len(err.strip().splitlines()) == 1
