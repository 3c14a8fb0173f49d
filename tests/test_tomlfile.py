"""TOML reading and error locations shared by every loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmu.tomlfile import field_path, parse_toml, read_toml, take_kind


class Bad(Exception):
    pass


def test_a_location_reads_as_the_files_dotted_path() -> None:
    assert field_path(("vmm", 2, "at")) == "vmm[2].at"
    assert field_path(("guest", "function-after", "memory")) == "guest.memory"
    assert field_path(("steps", 0, "read", "gpa"), skip={"read"}) == "steps[0].gpa"
    assert field_path(()) == "(top level)"


def test_syntax_errors_name_the_source() -> None:
    with pytest.raises(Bad, match=r"^x\.toml: not valid TOML: "):
        parse_toml("a = = 1", "x.toml", Bad)
    assert parse_toml("a = 1\n[b]\nc = 'd'", "x.toml", Bad) == {"a": 1, "b": {"c": "d"}}


def test_unreadable_and_non_utf8_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(Bad, match=r"missing\.toml: cannot read scenario: "):
        read_toml(tmp_path / "missing.toml", Bad, "scenario")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"name = '\xe9'")
    with pytest.raises(Bad, match="not a UTF-8 text file"):
        read_toml(latin, Bad)
    good = tmp_path / "good.toml"
    good.write_text("vcpus = 2\n")
    assert read_toml(good, Bad) == {"vcpus": 2}


def test_a_scenario_kind_key_is_taken_if_it_matches_and_named_if_not() -> None:
    data = {"kind": "steps", "step": []}
    assert take_kind(data, "steps", "x.toml", Bad) == {"step": []}
    assert data == {"kind": "steps", "step": []}  # the caller's dict is left alone
    assert take_kind({"step": []}, "steps", "x.toml", Bad) == {"step": []}
    with pytest.raises(Bad, match=r"^x\.toml: kind: 'workload', but 'steps' scenarios are needed"):
        take_kind({"kind": "workload"}, "steps", "x.toml", Bad)
    with pytest.raises(Bad, match=r"^x\.toml: kind: must be one of workload, interleaving, steps"):
        take_kind({"kind": 3}, "steps", "x.toml", Bad)
