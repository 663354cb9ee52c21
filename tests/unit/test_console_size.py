"""The caller's terminal size that a foreground `run`/`exec -t` gives the container's pty:
read in a child whose stdin is a real pty (no root needed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from corehelp import set_winsize

REPO = Path(__file__).resolve().parents[2]
PROBE = "from pyruntime.linux.console import caller_size; print(caller_size())"


def _size_seen_on(stdin) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], stdin=stdin, capture_output=True,
                          text=True, cwd=REPO, check=True, timeout=30).stdout.strip()


@pytest.mark.parametrize("size, seen", [((33, 111), "(33, 111)"), ((0, 0), "None")])
def test_the_size_of_the_terminal_on_stdin(size, seen):
    master, peer = os.openpty()
    try:
        set_winsize(master, *size)
        assert _size_seen_on(peer) == seen  # 0x0: no size, the pty keeps process.consoleSize
    finally:
        os.close(master)
        os.close(peer)


def test_no_terminal_no_size():
    assert _size_seen_on(subprocess.DEVNULL) == "None"
