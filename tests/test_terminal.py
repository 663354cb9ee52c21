"""process.terminal with --console-socket: one SCM_RIGHTS fd (the pty master), a tty as stdio."""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess

import pytest

from corehelp import ConsoleSocket, assert_failed, on_a_terminal, set_sh, set_winsize, wait_file

TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int)


@pytest.fixture
def console():
    cs = ConsoleSocket()
    yield cs
    cs.close()


def run_with_terminal(runtime, bundle, console, script, **process):
    set_sh(bundle, script, terminal=True, **process)
    cid = runtime.create(bundle, None, "--console-socket", console.path)
    return cid


def test_console_socket_receives_exactly_one_fd(runtime, bundle, console):
    cid = run_with_terminal(runtime, bundle, console, "echo hi")
    assert console.done.wait(5)
    assert console.messages == 1
    assert len(console.fds) == 1, console.fds
    assert console.payload, "the message carries the pty master's name"
    assert console.extra_bytes == b""
    fd = console.master
    # it is a pty master (TIOCGPTN works only on a master) from the container's own, fresh
    # devpts instance: its number is 0, whatever ptys the host has open
    n = fcntl.ioctl(fd, TIOCGPTN, struct.pack("I", 0xFFFF))
    assert struct.unpack("I", n)[0] == 0
    runtime("start", cid)
    out = console.read_until_eof()
    assert b"hi" in out
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_stdio_is_the_tty(runtime, bundle, console):
    cid = run_with_terminal(
        runtime, bundle, console,
        "test -t 0 && test -t 1 && test -t 2 && echo ALL-TTY; tty; "
        "stat -c 'console %t:%T' /dev/console; cut -d' ' -f7 /proc/self/stat")
    runtime("start", cid)
    out = console.read_until_eof().decode(errors="replace").replace("\r", "")
    lines = [line for line in out.splitlines() if line.strip()]
    assert "ALL-TTY" in lines, out
    # the pty comes from the container's own devpts instance
    assert "/dev/pts/0" in lines, out
    console_line = [line for line in lines if line.startswith("console ")]
    assert console_line, out
    major = int(console_line[0].split()[1].split(":")[0], 16)
    assert major == 136, out          # /dev/console is the pty peer (unix98 pty slave, major 136)
    # the tty is the controlling terminal: tty_nr in /proc/self/stat is non-zero
    assert lines[-1] != "0", out
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_console_without_proc(runtime, bundle, console):
    """A config that mounts no proc at /proc: /dev/console is still the pty peer, bound by
    the mount API's fds, not through a /proc/self/fd the rootfs may fake."""
    bundle.config["mounts"] = [m for m in bundle.config["mounts"] if m["destination"] != "/proc"]
    bundle.config["linux"]["maskedPaths"] = []
    bundle.config["linux"]["readonlyPaths"] = []
    cid = run_with_terminal(runtime, bundle, console,
                            "test -t 0 && test -t 1 && echo ALL-TTY; "
                            "stat -c 'console %t:%T' /dev/console")
    runtime("start", cid)
    out = console.read_until_eof().decode(errors="replace").replace("\r", "")
    assert "ALL-TTY" in out, out
    assert "console 88:" in out, out  # the unix98 pty slave, major 136
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_tty_belongs_to_the_process_user(runtime, bundle, console, tmp_path):
    """A non-root process must own its terminal (the console and an exec's pty), or it could
    not use it; the group stays devpts's gid= (the tty group), as with runc."""
    cid = run_with_terminal(runtime, bundle, console,
                            "stat -c 'run %u:%g' $(tty); sleep 30", user={"uid": 1000, "gid": 100})
    runtime("start", cid)
    out = b""
    while b"run " not in out or not out.endswith(b"\n"):
        out += os.read(console.master, 4096)
    assert "run 1000:5" in out.decode().replace("\r", ""), out
    ecs = ConsoleSocket()
    try:
        runtime("exec", "--tty", "--detach", "--console-socket", ecs.path, cid, "sh", "-c",
                "stat -c 'exec %u:%g' $(tty)", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, capture_output=False)
        got = ecs.read_until_eof().decode(errors="replace").replace("\r", "")
        assert "exec 1000:5" in got, got
    finally:
        ecs.close()
    runtime("kill", cid, "KILL")
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_terminal_input(runtime, bundle, console):
    cid = run_with_terminal(runtime, bundle, console, "read line; echo got:$line")
    runtime("start", cid)
    os.write(console.master, b"typed-text\n")
    out = console.read_until_eof().decode(errors="replace").replace("\r", "")
    assert "got:typed-text" in out
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_console_size(runtime, bundle, console):
    cid = run_with_terminal(runtime, bundle, console, "stty size",
                            consoleSize={"height": 33, "width": 111})
    runtime("start", cid)
    out = console.read_until_eof().decode(errors="replace")
    assert "33 111" in out
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_terminal_without_console_socket_fails(runtime, bundle):
    set_sh(bundle, "true", terminal=True)
    cid = runtime.new_id()
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc)
    assert not (runtime.root / cid).exists()


def test_console_socket_that_does_not_exist(runtime, bundle, tmp_path):
    set_sh(bundle, "true", terminal=True)
    cid = runtime.new_id()
    proc = runtime("create", "--bundle", bundle.path, "--console-socket", tmp_path / "nope.sock", cid,
                   check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc)
    assert not (runtime.root / cid).exists()


def test_no_terminal_keeps_stdio(runtime, bundle):
    set_sh(bundle, "test -t 0 || echo not-a-tty; ls -l /dev/console 2>/dev/null || echo no-console")
    out = runtime.run(bundle).stdout
    assert "not-a-tty" in out


def _foreground(runtime, bundle, command, script):
    """The arguments of a foreground `run` of a terminal container running script, or of an
    `exec -t` of it in a started container (whose id comes back, for the caller to delete)."""
    if command == "run":
        set_sh(bundle, script, terminal=True)
        return ("run", "--bundle", bundle.path, runtime.new_id()), None
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    runtime("start", cid)
    return ("exec", "-t", cid, "sh", "-c", script), cid


@pytest.mark.parametrize("command", ["run", "exec"])
def test_input_typed_before_the_proxy_starts_reaches_the_process(runtime, bundle, command):
    """A foreground `run` or `exec -t` puts the caller's terminal in raw mode without flushing
    it, as runc: a line typed before that (here, before the runtime even starts) still reaches
    the process. The CI failure this guards: a restore lost "hello" typed just before."""
    script = 'read line; echo "got $line"; exit 5'
    args, cid = _foreground(runtime, bundle, command, script)
    try:
        status, out = on_a_terminal(runtime.cmd(*args), typed_ahead=b"hello\n")
        assert status == 5 and b"got hello" in out, (status, out)
    finally:
        if cid:
            runtime("delete", "--force", cid)


@pytest.mark.parametrize("command", ["run", "exec"])
def test_a_foreground_terminal_has_the_callers_size_and_follows_it(runtime, bundle, command):
    """As runc: a foreground `run` or `exec -t` from a terminal gives the container's pty that
    terminal's size, and resizes it when the terminal is resized (SIGWINCH), so that a full
    screen program inside sees the window it is drawn in."""
    script = ("stty size > /tmp/first; i=0; "  # then waits up to ~20 s for the new size
              'while [ "$(stty size)" = "33 111" ] && [ $i -lt 1000 ]; do sleep 0.02; '
              "i=$((i+1)); done; stty size > /tmp/second")
    args, cid = _foreground(runtime, bundle, command, script)
    tmp = bundle.rootfs / "tmp"

    def resize(master):
        wait_file(tmp / "first", timeout=20)
        set_winsize(master, 44, 122)
    try:
        status, out = on_a_terminal(runtime.cmd(*args), during=resize, size=(33, 111))
        assert status == 0, out
        assert (tmp / "first").read_text() == "33 111\n"
        assert (tmp / "second").read_text() == "44 122\n"
    finally:
        if cid:
            runtime("delete", "--force", cid)
