"""Tests of kvmmu.report.atomic: a results directory appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmu.report.atomic import atomic_directory


def test_new_directory_appears_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out" / "boot"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not final.exists() and tmp.parent == final.parent
    assert (final / "a.txt").read_text() == "1"
    assert sorted(p.name for p in final.parent.iterdir()) == ["boot"]


def test_failure_keeps_the_previous_report_and_leaves_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "boot"
    with atomic_directory(final) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in final.iterdir()) == [".kvmmu-output", "old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["boot"]


def test_success_replaces_the_previous_report(tmp_path: Path) -> None:
    final = tmp_path / "boot"
    for content in ("one", "two"):
        with atomic_directory(final) as tmp:
            (tmp / content).write_text(content)
    assert sorted(p.name for p in final.iterdir()) == [".kvmmu-output", "two"]
    assert [p.name for p in tmp_path.iterdir()] == ["boot"]


# --- never deleting what kvmmu did not write (issue 11) ------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402

from kvmmu.report.atomic import (  # noqa: E402
    MARKER,
    OutputError,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    marked_files,
)


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(folder.rglob("*"))
    } | {".": (folder.stat().st_mode, b"")}


def test_a_folder_holding_other_files_is_refused_and_left_exactly_as_it_was(tmp_path: Path) -> None:
    home = tmp_path / "results"
    home.mkdir(mode=0o755)
    (home / "thesis.tex").write_text("years of work")
    (home / "sub").mkdir()
    (home / "sub" / "data.csv").write_text("1,2")
    before = _snapshot(home)
    with pytest.raises(OutputError, match="'sub' and 1 more"), atomic_directory(home) as tmp:
        (tmp / "report.json").write_text("{}")
    assert _snapshot(home) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_a_file_added_to_a_previous_report_makes_the_next_run_refuse(tmp_path: Path) -> None:
    final = tmp_path / "boot"
    with atomic_directory(final) as tmp:
        (tmp / "report.json").write_text("{}")
    assert marked_files(final) == {"report.json"}
    (final / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt"):
        check_output_dir(final)
    assert (final / "notes.txt").read_text() == "mine"


def test_a_file_arriving_while_kvmmu_works_is_kept_and_the_report_not_swapped(tmp_path: Path) -> None:
    final = tmp_path / "boot"
    with atomic_directory(final) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(OutputError, match=r"late\.txt"), atomic_directory(final) as tmp:
        (tmp / "new.txt").write_text("new")
        (final / "late.txt").write_text("user's")
    assert sorted(p.name for p in final.iterdir()) == [MARKER, "late.txt", "old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot"]


def test_an_empty_folder_is_used_and_keeps_its_permissions(tmp_path: Path) -> None:
    final = tmp_path / "empty"
    final.mkdir()
    final.chmod(0o751)
    with atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    assert stat.S_IMODE(final.stat().st_mode) == 0o751
    assert (final / "a").read_text() == "1"


def test_a_new_folder_gets_the_umask_permissions_not_mkdtemps_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "new") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755


@pytest.mark.parametrize("bad", ["", " ", ".", "..", "./", "a/..", "x\0y"])
def test_names_that_are_not_a_folder_of_their_own_are_refused(bad: str) -> None:
    with pytest.raises(OutputError, match="--out"):
        check_output_dir(bad)


def test_the_current_folder_and_its_ancestors_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    for p in (tmp_path / "a" / "b", tmp_path / "a", "../b"):
        with pytest.raises(OutputError, match="current folder"):
            check_output_dir(p)


def test_an_existing_file_a_file_as_parent_and_an_unwritable_place_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "kvmmu-out"
    f.write_text("a file")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_dir(f)
    with pytest.raises(OutputError, match="not a folder"):
        check_output_dir(f / "boot")
    with pytest.raises(OutputError, match="cannot write in /proc"):
        check_output_dir("/proc/x")
    assert f.read_text() == "a file"


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OutputError, match="symbolic link"):
        check_output_dir(tmp_path / "link")


def test_output_file_replaces_only_what_kvmmu_wrote(tmp_path: Path) -> None:
    def ours(text: str) -> bool:
        return text.startswith("# kvmmu")

    p = tmp_path / "profile.toml"
    assert check_output_file(p, ours=ours) == p
    atomic_write_text(p, "# kvmmu 1\n")
    check_output_file(p, ours=ours)
    atomic_write_text(p, "# kvmmu 2\n")
    assert p.read_text() == "# kvmmu 2\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["profile.toml"]
    mine = tmp_path / "mine.toml"
    mine.write_text("[costs]\n")
    with pytest.raises(OutputError, match="did not write"):
        check_output_file(mine, ours=ours)
    for bad in ("", ".", str(tmp_path), str(tmp_path / "nodir" / "p.toml"), "/proc/x", "/proc/"):
        with pytest.raises(OutputError):
            check_output_file(bad, ours=ours)


# --- the rule as a property: whatever a folder holds, nothing unlisted is ever lost ------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_NAMES = st.sets(st.sampled_from(["a.json", "b.csv", "c.png", "notes.txt", "x", ".hidden"]), max_size=5)


@given(listed=_NAMES, present=_NAMES)
@settings(max_examples=60, deadline=None)
def test_any_folder_is_replaced_only_if_everything_in_it_is_kvmmus(
    tmp_path_factory: pytest.TempPathFactory, listed: set[str], present: set[str]
) -> None:
    final = tmp_path_factory.mktemp("p") / "out"
    final.mkdir()
    for name in present:
        (final / name).write_text(name)
    (final / MARKER).write_text(json.dumps({"kvmmu": 1, "files": sorted(listed)}))
    foreign = present - listed
    try:
        with atomic_directory(final) as tmp:
            (tmp / "new.txt").write_text("new")
    except OutputError:
        assert foreign  # refused only when something unlisted is there
        assert {p.name for p in final.iterdir()} == present | {MARKER}
        assert all((final / n).read_text() == n for n in present)
    else:
        assert not foreign
        assert {p.name for p in final.iterdir()} == {"new.txt", MARKER}
    assert [p.name for p in final.parent.iterdir()] == ["out"]  # no temporary left beside it


def test_atomic_bytes_keep_an_existing_files_mode_and_leave_no_temporary(tmp_path: Path) -> None:
    from kvmmu.report.atomic import atomic_write_bytes

    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"\x00new")
    assert target.read_bytes() == b"\x00new" and (target.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
