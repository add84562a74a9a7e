"""scripts/setup.sh: on a machine that has everything, set-up installs nothing (and needs no root)."""

import os
import subprocess
from pathlib import Path

from .servers import ROOT

RUNS = 30


def test_fonts_present_means_no_apt_get_however_long_fc_list_runs(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "apt-get-calls"
    # Many fonts: fc-list is still writing when a reader that stops early exits (SIGPIPE).
    (fake_bin / "fc-list").write_text("#!/bin/sh\nseq 200000 | sed 's|^|/usr/share/fonts/font-|'\n")
    (fake_bin / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    (fake_bin / "nginx").write_text("#!/bin/sh\nexit 0\n")
    for executable in fake_bin.iterdir():
        executable.chmod(0o755)
    script = f"source {ROOT}/scripts/setup.sh; for _ in $(seq {RUNS}); do ensure_test_services; done; echo done"
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert not calls.exists(), f"apt-get was run although fonts exist: {calls.read_text()}"
