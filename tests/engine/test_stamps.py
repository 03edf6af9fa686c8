"""The key stamp the processes of a state folder share: a bump in one process is seen by
every other at once, no bump is lost when processes bump together, and a folder where the file
cannot be made leaves a counter that never moves (the caches keep their time limit)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from scripts_engine.stamps import Stamp

_BUMP = """
import sys
from pathlib import Path
from scripts_engine.stamps import Stamp
stamp = Stamp(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    stamp.bump()
"""


def test_a_bump_anywhere_is_seen_everywhere_and_none_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys.stamp"
    here, there = Stamp(path), Stamp(path)
    assert here.value() == there.value() == 0
    here.bump()
    assert there.value() == 1
    bumpers = [subprocess.Popen([sys.executable, "-c", _BUMP, str(path), "300"])
               for _ in range(4)]  # fmt: skip
    for bumper in bumpers:
        assert bumper.wait(120) == 0
    assert here.value() == there.value() == 1 + 4 * 300
    assert Stamp(path).value() == 1201  # a process that comes later reads it too
    here.close()
    there.close()


def test_a_folder_without_a_stamp_leaves_it_still(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="scripts_engine"):
        stamp = Stamp(tmp_path / "file" / "keys.stamp")
    stamp.bump()
    assert stamp.value() == 0
    assert any("no shared key stamp" in r.getMessage() for r in caplog.records)
