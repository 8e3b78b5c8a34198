"""Two labs never take each other's names: a lab run from another state directory (the
e2e tests') refuses to come up while `make lab`'s is up, and its `down` leaves that lab's
namespaces and pins alone (controller/lab/runner.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.lab.netns import LabError
from controller.lab.runner import LabRunner, LabState, owner


def test_a_second_lab_refuses_to_come_up_and_its_down_leaves_the_first_alone(
        tmp_path: Path) -> None:
    marker = tmp_path / "owner"
    first, second = tmp_path / "lab", tmp_path / "e2e"
    LabState("m", "gobgp").save(first)  # `make lab` is up, holding the names
    marker.write_text(f"{first}\n")
    assert owner(marker) == first
    with pytest.raises(LabError, match=f"another lab is up \\(state in {first}\\)"):
        LabRunner(second, marker).up()
    LabState("m", "gobgp").save(second)  # its own state, say from a run cut short
    done = LabRunner(second, marker).down()
    assert done == [f"left the names of the lab up in {first} alone"]
    assert not second.exists() and LabState.load(first) is not None
    assert marker.read_text().strip() == str(first)


def test_a_marker_whose_lab_is_gone_names_no_owner(tmp_path: Path) -> None:
    marker = tmp_path / "owner"
    marker.write_text(f"{tmp_path / 'gone'}\n")
    assert owner(marker) is None
    assert owner(tmp_path / "none") is None
    LabState("m", "gobgp").save(tmp_path / "lab")
    marker.write_text(f"{tmp_path / 'lab'}\n")
    assert LabRunner(tmp_path / "lab", marker)._other() is None  # itself: not another
