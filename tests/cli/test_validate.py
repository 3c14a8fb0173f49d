"""``kvmmu validate``: the comparison printed, as JSON, and bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmmu.cli import main

POST = Path(__file__).parent.parent / "data" / "qemu-q35-post" / "capture.json.gz"


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_validate_prints_the_delete_zap_pairing_and_shadow_pages_beside_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["validate", str(POST.parent)]) == 0
    out = capsys.readouterr().out
    assert "deletes paired with one kvm_mmu_zap_all_fast: kernel 23, model 23" in out
    assert "shadow pages created (kvm_mmu_get_page new)" in out
    assert "disagreements (" in out and "t=" in out


def test_validate_json_carries_every_memslot_ioctl_and_strict_fails_on_disagreement(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["validate", "--json", "--strict", str(POST)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["memslot_ioctls"]) == 50
    assert doc["agreed"] < doc["compared"]


@pytest.mark.parametrize("name", ["missing", "garbage"])
def test_an_unreadable_capture_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    if name == "garbage":
        (tmp_path / name).write_text("hello\n")
    assert run(["validate", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvmmu: error: ") and err.count("\n") == 1
