"""tools/run_recipes.sh: the results runs' driver yields the CPU to other work, autogroup scheduling included."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _autogroup_nice(text: str) -> int:
    return int(text.split("nice")[-1])  # "/autogroup-12 nice 19"


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="the kernel has no autogroup scheduling")
def test_run_recipes_trains_in_a_session_of_its_own_at_the_lowest_priority(tmp_path):
    # The script as committed, beside a stand-in for `vislab` that reports where it was scheduled.
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "run_recipes.sh", tmp_path / "tools" / "run_recipes.sh")
    fake = tmp_path / ".venv" / "bin" / "vislab"
    fake.parent.mkdir(parents=True)
    report = tmp_path / "where.txt"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'{{ cat /proc/self/autogroup; ps -o sid= -p $$; ps -o ni= -p $$; echo "$@"; }} > {report}\n'
    )
    fake.chmod(0o755)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # the script names the commit it runs
    before = Path("/proc/self/autogroup").read_text()
    proc = subprocess.run(
        ["bash", str(tmp_path / "tools" / "run_recipes.sh"), str(tmp_path / "runs"), "/data", "quick"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "VISLAB_RUNS_OWN_SESSION"},
    )
    assert proc.returncode == 0, proc.stderr
    group, sid, ni, args = report.read_text().splitlines()
    assert _autogroup_nice(group) == 19  # nice inside a session is not enough under autogroup scheduling
    # Its own group, so the caller's session keeps its priority. The file is empty for a task in the root group (a
    # container's init session, where CI runs): any autogroup of the script's own then differs from it.
    assert group.split()[0] != (before.split() or ["(root group)"])[0]
    assert int(sid) != os.getsid(0)
    assert int(ni) == 19 and args.startswith("train quick --set data.name=imagefolder --set data.root=/data")
    assert Path("/proc/self/autogroup").read_text() == before
    assert "quick exit 0" in proc.stdout
