"""The exec shim that waits on exec.fifo for the created init: run for real (fork, a real
fifo, the sealed memfd), no root needed."""
from __future__ import annotations

import os
import signal
import time

import pytest

from pyruntime.lifecycle import channel, execfifo
from pyruntime.setup import execshim

pytestmark = pytest.mark.skipif(not execshim.supported(), reason="the shim is x86_64 code")


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _fork_waiting_shim(fifo: str, target: str, how: str) -> int:
    """A child that execs a waiting shim for `target`, its fifo reached through /proc/self/fd
    (how="absolute") or a dirfd of /proc (how="dirfd", closed by the shim)."""
    pid = os.fork()
    if pid == 0:
        try:
            k = os.open(fifo, os.O_PATH)
            at = os.open("/proc", os.O_PATH | os.O_DIRECTORY) if how == "dirfd" else -1
            where = f"/proc/self/fd/{k}" if at < 0 else f"self/fd/{k}"
            shim = execshim.prepare(target, k, lambda m, _e: channel.FIFO_ERROR + m.encode(),
                                    wait=(at, where), die_on=(signal.SIGTERM, signal.SIGHUP))
            execshim.execute(shim, target, [target, "30"], {}, k, (at,) if at >= 0 else ())
        finally:
            os._exit(99)
    return pid


def _until(cond, what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


@pytest.mark.parametrize("how", ["absolute", "dirfd"])
def test_the_shim_waits_for_start_then_execs(tmp_path, how):
    """Until `start` opens the fifo the shim blocks, named pyruntime:INIT; then it writes
    FIFO_READY and execs the target, whose execve closes the fifo (EOF) while it runs; the
    target holds neither the fifo (either end) nor the dirfd."""
    fifo = str(tmp_path / "exec.fifo")
    os.mkfifo(fifo)
    pid = _fork_waiting_shim(fifo, "/bin/sleep", how)
    try:
        _until(lambda: _comm(pid) == "pyruntime:INIT", "the shim never waited")
        assert execfifo.read(fifo, pid) == channel.FIFO_READY
        assert _comm(pid) == "sleep" and os.waitpid(pid, os.WNOHANG) == (0, 0)
        held = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
        assert not [h for h in held if h.endswith("exec.fifo") or h == "/proc"], held
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_the_shims_failed_execve_is_reported_after_fifo_ready(tmp_path):
    fifo = str(tmp_path / "exec.fifo")
    os.mkfifo(fifo)
    pid = _fork_waiting_shim(fifo, "/nonexistent", "absolute")
    data = execfifo.read(fifo, pid)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 127
    assert data == channel.FIFO_READY + channel.FIFO_ERROR + \
        b'exec: "/nonexistent": no such file or directory'


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_it_dies_on_ends_the_waiting_shim(tmp_path, sig):
    """The shim handles the signals it is given (a pid namespace's init ignores any other
    but SIGKILL, from the host too) by exiting with 128 + the signal, as the init did."""
    fifo = str(tmp_path / "exec.fifo")
    os.mkfifo(fifo)
    pid = _fork_waiting_shim(fifo, "/bin/sleep", "absolute")
    _until(lambda: _comm(pid) == "pyruntime:INIT", "the shim never waited")
    os.kill(pid, sig)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + sig
