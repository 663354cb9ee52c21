"""pyruntime.seccomp: filters built with libseccomp, loaded for real in forked children
(tests/unit/test_seccomp_compile.py checks compilation, the cache and check() without loading).

Each behaviour test forks: the child sets no_new_privs, loads a filter, makes raw syscalls through
libc's syscall(2) and reports (ret, errno) as JSON through a pipe; the parent reads the report and
the wait status (SIGSYS deaths). Children always leave through os._exit.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import seccomp_agent
from pyruntime.seccomp import compile as seccomp, kernel, notify, profile

HERE = Path(__file__).parent
DOCKER_PROFILE = HERE / "seccomp" / "docker-default.json"
PR_SET_NO_NEW_PRIVS = 38

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def nr(name: str) -> int:
    n = seccomp.resolve_syscall(name)
    assert n is not None and n >= 0, name
    return n


def raw(name: str, *args: int) -> list[int]:
    """syscall(name, args...) -> [return value, errno] without any other syscall in between."""
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr(name)), *(ctypes.c_ulong(a) for a in args))
    return [ret, ctypes.get_errno()]


# Syscalls a Python child needs to report and exit under a default-deny filter.
PY_MIN = ["write", "exit_group", "exit", "brk", "mmap", "munmap", "mremap", "madvise",
          "rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "futex", "close"]


def run_child(profile: dict | None, action, *, prep=None, timeout: float = 10):
    """Fork; the child runs prep(), sets no_new_privs, loads `profile` (or installs a compiled
    seccomp.Program), runs action() and writes json(result). Returns (wait status, result or
    None)."""
    nr("getppid")  # load libseccomp and resolve names before fork (nothing to do after load)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # ---- child: never returns
        code = 0
        try:
            os.close(r)
            if prep:
                prep()
            if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl")
            if isinstance(profile, seccomp.Program):
                fd = kernel.install(profile)
            else:
                fd = seccomp_agent.load(profile) if profile is not None else None
            res = action(fd) if action.__code__.co_argcount else action()
            os.write(w, json.dumps(res).encode())
        except BaseException as e:  # noqa: BLE001 - report anything
            code = 3
            try:
                os.write(w, json.dumps({"exception": repr(e)}).encode())
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    result = json.loads(data) if data else None
    if isinstance(result, dict) and "exception" in result:
        pytest.fail(f"child failed: {result['exception']}")
    return status, result


def allow_all_but(*rules, **extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules), **extra}


def deny_all_but(names, *rules, **extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": PY_MIN + list(names), "action": "SCMP_ACT_ALLOW"}, *rules],
            **extra}


# ---------------------------------------------------------------- actions

def test_errno_with_errno_ret():
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1234},
                         {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO"})
    _, res = run_child(prof, lambda: [raw("getppid"), raw("getpgid", 0), raw("getpid")])
    assert res[0] == [-1, 1234]
    assert res[1] == [-1, errno.EPERM]  # errnoRet absent: EPERM
    assert res[2][0] > 0


def test_default_errno_ret():
    _, res = run_child(deny_all_but([], defaultErrnoRet=errno.EXDEV),
                       lambda: [raw("getppid"), raw("getpid")])
    assert res == [[-1, errno.EXDEV], [-1, errno.EXDEV]]


def test_default_errno_without_errno_ret_is_eperm():
    _, res = run_child(deny_all_but(["getpid"]), lambda: [raw("getppid"), raw("getpid")])
    assert res[0] == [-1, errno.EPERM]
    assert res[1][0] == os.getpid() or res[1][0] > 0  # allowed


def test_allow_rule_under_deny_default():
    _, res = run_child(deny_all_but(["getppid"]), lambda: [raw("getppid"), raw("getpgid", 0)])
    assert res[0] == [os.getpid(), 0]
    assert res[1] == [-1, errno.EPERM]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL",
                                    "SCMP_ACT_KILL_THREAD"])
def test_kill_actions_die_of_sigsys(action):
    status, res = run_child(allow_all_but({"names": ["getppid"], "action": action}),
                            lambda: raw("getppid"))
    assert res is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_trap_raises_sigsys():
    got = []

    def prep():
        signal.signal(signal.SIGSYS, lambda *a: got.append("SIGSYS"))

    def action():
        r = raw("getppid")
        for _ in range(3):  # let the Python-level handler run
            pass
        return [r, got]

    status, res = run_child(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_TRAP"}),
                            action, prep=prep)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert res[1] == ["SIGSYS"]
    assert res[0][0] != os.getpid()  # not executed (x86_64 leaves the syscall nr in rax)


def test_trap_default_handler_kills_with_sigsys():
    status, _ = run_child(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_TRAP"}),
                          lambda: raw("getppid"))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_log_allows():
    _, res = run_child(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_LOG"}),
                       lambda: raw("getppid"))
    assert res == [os.getpid(), 0]


def test_log_default_allows():
    _, res = run_child({"defaultAction": "SCMP_ACT_LOG",
                        "syscalls": [{"names": ["getpgid"], "action": "SCMP_ACT_ERRNO"}]},
                       lambda: [raw("getppid"), raw("getpgid", 0)])
    assert res == [[os.getpid(), 0], [-1, errno.EPERM]]


def test_trace_without_tracer_gives_enosys():
    # No tracer attached: the kernel fails a TRACE'd syscall with ENOSYS.
    _, res = run_child(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_TRACE",
                                      "errnoRet": 5}), lambda: raw("getppid"))
    assert res == [-1, errno.ENOSYS]


def test_seccomp_mode_is_filter():
    def action():
        with open("/proc/self/status") as f:
            return [line.split()[1] for line in f if line.startswith("Seccomp:")]
    _, res = run_child(allow_all_but(), action)
    assert res == ["2"]


# ---------------------------------------------------------------- arguments

OP_CASES = [
    # op, value, valueTwo, {arg0: denied?}
    ("SCMP_CMP_NE", 5, None, {5: False, 6: True, 0: True}),
    ("SCMP_CMP_LT", 5, None, {4: True, 5: False, 6: False, 0: True}),
    ("SCMP_CMP_LE", 5, None, {5: True, 6: False, 0: True}),
    ("SCMP_CMP_EQ", 5, None, {5: True, 4: False, 0x100000005: False}),
    ("SCMP_CMP_EQ", 0x100000005, None, {5: False, 0x100000005: True}),
    ("SCMP_CMP_GE", 5, None, {5: True, 4: False, 1 << 63: True}),
    ("SCMP_CMP_GT", 5, None, {6: True, 5: False, 0xFFFFFFFFFFFFFFFF: True}),
    ("SCMP_CMP_MASKED_EQ", 0xFF00, 0x1200, {0x1234: True, 0x1334: False, 0x12: False,
                                            0xFFFF12FF: True}),
    ("SCMP_CMP_MASKED_EQ", 0x7E020000, 0, {0x11: True, 0x20000: False, 0x10000000: False}),
]


@pytest.mark.parametrize("op,value,value2,probes", OP_CASES,
                         ids=[f"{c[0][9:]}-{c[1]:#x}" for c in OP_CASES])
def test_argument_operators(op, value, value2, probes):
    arg = {"index": 0, "value": value, "op": op}
    if value2 is not None:
        arg["valueTwo"] = value2
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
                          "args": [arg]})
    _, res = run_child(prof, lambda: [raw("getppid", a) for a in probes])
    got = {a: r == [-1, 77] for a, r in zip(probes, res)}
    assert got == probes
    for r in res:
        assert r in ([-1, 77], [os.getpid(), 0])


def test_conditions_on_different_args_are_anded():
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
                          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                                   {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]})
    _, res = run_child(prof, lambda: [raw("getppid", 1, 2), raw("getppid", 1, 3),
                                      raw("getppid", 0, 2)])
    assert [r[0] == -1 for r in res] == [True, False, False]


def test_conditions_on_the_same_arg_are_separate_rules():
    # runc: two conditions on one index become two rules, i.e. either matches.
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
                          "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_GT"},
                                   {"index": 0, "value": 5, "op": "SCMP_CMP_LT"}]})
    _, res = run_child(prof, lambda: [raw("getppid", a) for a in (3, 7, 12)])
    assert [r[0] == -1 for r in res] == [True, False, True]


def test_personality_filter_like_docker():
    rules = [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
              "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
             for v in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)]
    _, res = run_child(deny_all_but([], *rules),
                       lambda: [raw("personality", 0xFFFFFFFF), raw("personality", 0x0040000)])
    assert res[0][0] >= 0
    assert res[1] == [-1, errno.EPERM]


# ---------------------------------------------------------------- names, defaults

def test_unknown_syscall_names_are_skipped():
    prof = allow_all_but({"names": ["no_such_syscall", "getppid", "mseal_x"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 55})
    _, res = run_child(prof, lambda: raw("getppid"))
    assert res == [-1, 55]


def test_rule_with_the_default_action_is_skipped():
    prof = deny_all_but(["getppid"], {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO"},
                        {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
    prog = seccomp.compile(prof)
    assert prog is not None
    _, res = run_child(prof, lambda: [raw("getpgid", 0), raw("getsid", 0)])
    assert res == [[-1, errno.EPERM], [-1, errno.EPERM]]
    # same action with another errno is a different action and is kept
    prof2 = deny_all_but([], {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9})
    _, res = run_child(prof2, lambda: [raw("getpgid", 0), raw("getsid", 0)])
    assert res == [[-1, 9], [-1, errno.EPERM]]


def test_pseudo_syscalls_and_architectures():
    prof = {"defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                              "SCMP_ARCH_X86_64"],
            "syscalls": [{"names": PY_MIN + ["socketcall", "_llseek", "getppid"],
                          "action": "SCMP_ACT_ALLOW"}]}
    _, res = run_child(prof, lambda: [raw("getppid"), raw("getpid")])
    assert res == [[os.getpid(), 0], [-1, errno.EPERM]]


def test_enosys_for_syscalls_newer_than_the_profile():
    # The profile names nothing above getppid (110) except exit_group (231): a syscall past the
    # largest named one gets ENOSYS (runc's stub), an older unnamed one the default EPERM.
    prof = deny_all_but(["getppid"], architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    prog = seccomp.compile(prof)
    largest = max(nr(n) for n in PY_MIN + ["getppid"])
    newer = nr("pidfd_open")  # 434
    assert largest < newer
    _, res = run_child(prof, lambda: [raw("getpgid", 0), raw("pidfd_open", os.getpid(), 0)])
    assert res == [[-1, errno.EPERM], [-1, errno.ENOSYS]]
    # no stub without architectures (as runc), nor with an allowing default
    assert len(seccomp.compile(deny_all_but(["getppid"]))) < len(prog)
    _, res = run_child(deny_all_but(["getppid"]), lambda: raw("pidfd_open", os.getpid(), 0))
    assert res == [-1, errno.EPERM]


def test_compile_in_parent_install_in_child():
    prog = seccomp.compile(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                          "errnoRet": 42}))

    def action():
        kernel.install(prog)
        return raw("getppid")
    _, res = run_child(None, action)
    assert res == [-1, 42]


def test_install_needs_no_host_filesystem(tmp_path):
    # The init installs after pivot_root: no libseccomp, no Python modules there.
    prog = seccomp.compile(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                          "errnoRet": 43}, flags=[]))
    empty = tmp_path / "empty"
    empty.mkdir()

    def prep():
        os.chroot(empty)
        os.chdir("/")

    def action():
        kernel.install(prog)
        return [raw("getppid"), os.path.exists("/usr")]
    _, res = run_child(None, action, prep=prep)
    assert res == [[-1, 43], False]


def test_docker_default_profile_loads():
    prof = json.loads(DOCKER_PROFILE.read_text())
    assert len(prof["syscalls"][0]["names"]) > 300
    prog = seccomp.compile(prof)
    assert prog.flags == kernel.FLAG_SPEC_ALLOW and not prog.notify

    def action():
        return {"ppid": raw("getppid"),
                "pers_ok": raw("personality", 0xFFFFFFFF),
                "pers_bad": raw("personality", 0x0040000),
                "vsock": raw("socket", 40, 1, 0),
                "unix": raw("socket", 1, 1, 0),
                "clone3": raw("clone3", 0, 0),
                "unshare": raw("unshare", 0x10000000),
                "mount": raw("mount", 0, 0, 0, 0, 0),
                "newer": raw("pidfd_getfd", 0, 0, 0)}
    _, res = run_child(prof, action)
    assert res["ppid"] == [os.getpid(), 0]
    assert res["pers_ok"][0] >= 0
    assert res["pers_bad"] == [-1, errno.EPERM]
    assert res["vsock"] == [-1, errno.EPERM]
    assert res["unix"][0] >= 0
    assert res["clone3"] == [-1, errno.ENOSYS]
    assert res["unshare"] == [-1, errno.EPERM]
    assert res["mount"] == [-1, errno.EPERM]
    assert res["newer"] == [-1, errno.EPERM]  # 438 < the largest named syscall: default


# ---------------------------------------------------------------- the cache of programs

def test_cache_key_covers_the_whole_profile(tmp_path):
    a = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3})
    b = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4})
    reordered = dict(reversed(list(a.items())))  # same profile, other key order: same file
    for prof in (a, b, reordered):
        seccomp.compile(prof, cache_dir=str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 2
    _, res = run_child(seccomp.compile(b, cache_dir=str(tmp_path)), lambda: raw("getppid"))
    assert res == [-1, 4]


# ---------------------------------------------------------------- flags

@pytest.mark.parametrize("flags,expected", [
    (None, kernel.FLAG_SPEC_ALLOW),
    ([], 0),
    (["SECCOMP_FILTER_FLAG_LOG"], kernel.FLAG_LOG),
    (["SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"],
     kernel.FLAG_SPEC_ALLOW | kernel.FLAG_LOG),
    (["SECCOMP_FILTER_FLAG_TSYNC"], 0),
    (["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"], 0),  # no listener: dropped
])
def test_flags(flags, expected):
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3})
    if flags is not None:
        prof["flags"] = flags
    profile.check(prof)
    assert seccomp.compile(prof).flags == expected
    _, res = run_child(prof, lambda: raw("getppid"))
    assert res == [-1, 3]


# ---------------------------------------------------------------- NOTIFY and the listener

def test_notify_fd_and_agent_over_listener(tmp_path):
    sock_path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    srv.settimeout(10)
    prof = allow_all_but({"names": ["getppid", "getpgid"], "action": "SCMP_ACT_NOTIFY"},
                         listenerPath=sock_path, listenerMetadata="MKNOD=/dev/null",
                         flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
    profile.check(prof)
    prog = seccomp.compile(prof)
    assert prog.notify
    assert prog.flags == kernel.FLAG_NEW_LISTENER | kernel.FLAG_WAIT_KILLABLE_RECV

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # ---- child
        code = 0
        try:
            os.close(r)
            srv.close()
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            fd = seccomp_agent.load(prof)
            assert isinstance(fd, int) and fd > 2
            state = {"ociVersion": "1.3.0", "id": "ctr-1", "status": "creating",
                     "pid": os.getpid(), "bundle": "/b", "annotations": {"k": "v"}}
            seccomp_agent.send_to_listener(sock_path, fd, state, "MKNOD=/dev/null")
            os.close(fd)
            res = [raw("getppid"), raw("getppid"), raw("getpgid", 0)]
            os.write(w, json.dumps(res).encode())
        except BaseException as e:  # noqa: BLE001
            code = 3
            try:
                os.write(w, json.dumps({"exception": repr(e)}).encode())
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(w)
    notify_fd = None
    try:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            assert conn.recv(1) == b""  # one message, then the runtime closes
        assert len(fds) == 1
        notify_fd = fds[0]
        state = json.loads(msg)
        assert state["ociVersion"]
        assert state["fds"] == ["seccompFd"]
        assert state["pid"] == pid
        assert state["metadata"] == "MKNOD=/dev/null"
        assert state["state"]["id"] == "ctr-1" and state["state"]["pid"] == pid

        n = seccomp_agent.notify_receive(notify_fd)
        assert n.pid == pid and n.nr == nr("getppid")
        assert seccomp_agent.notify_id_valid(notify_fd, n.id)
        seccomp_agent.notify_respond(notify_fd, n.id, val=4242)
        n = seccomp_agent.notify_answer(notify_fd, error=errno.EXDEV)
        assert n.nr == nr("getppid")
        n = seccomp_agent.notify_answer(notify_fd, continue_syscall=True)
        assert n.nr == nr("getpgid") and n.args[0] == 0

        ready = select.select([r], [], [], 10)[0]
        assert ready, "child did not report"
        res = json.loads(os.read(r, 65536))
        assert "exception" not in res, res
        assert res[0] == [4242, 0]
        assert res[1] == [-1, errno.EXDEV]
        assert res[2][0] > 0
    finally:
        if notify_fd is not None:
            os.close(notify_fd)
        srv.close()
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def test_send_to_listener_errors(tmp_path):
    from pyruntime.errors import RuntimeFailure

    r, w = os.pipe()
    try:
        with pytest.raises(RuntimeFailure, match="failed to connect with seccomp agent at "
                                                 "listenerPath"):  # runc's words
            seccomp_agent.send_to_listener(str(tmp_path / "nobody.sock"), r, {"pid": 1})
    finally:
        os.close(r)
        os.close(w)


def test_process_state_shape():
    st = {"ociVersion": "1.3.0", "id": "x", "status": "creating", "pid": 7, "bundle": "/b"}
    msg = notify.process_state(st)
    assert msg == {"ociVersion": msg["ociVersion"], "fds": ["seccompFd"], "pid": 7, "state": st}
    assert notify.process_state(st, "m")["metadata"] == "m"


def test_notification_struct_layout():
    raw_notif = struct.pack("=QIIiIQ6Q", 9, 123, 0, 110, 0xC000003E, 0xdead, 1, 2, 3, 4, 5, 6)
    assert len(raw_notif) == 80
    n = seccomp_agent.Notification(raw_notif)
    assert (n.id, n.pid, n.nr, n.arch, n.args) == (9, 123, 110, 0xC000003E, (1, 2, 3, 4, 5, 6))


# ---------------------------------------------------------------- in a real container

def test_integration_docker_profile(runtime, bundle):
    bundle.config["process"]["args"] = [
        "/bin/sh", "-c",
        "grep '^Seccomp:' /proc/self/status; mkdir /tmp/d && echo mkdir-ok; "
        "linux32 true && echo personality-ok; ls / >/dev/null && echo ls-ok"]
    bundle.config["linux"]["seccomp"] = json.loads(DOCKER_PROFILE.read_text())
    bundle.write()
    out = runtime.run(bundle).stdout
    assert "Seccomp:\t2" in out
    for word in ("mkdir-ok", "personality-ok", "ls-ok"):
        assert word in out


def test_integration_cached_program_filters_like_a_fresh_one(runtime, bundle):
    """The first container writes <root>/.cache/seccomp; the second and an exec read it."""
    bundle.config["process"]["args"] = ["/bin/sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?"]
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.EXDEV}]}
    bundle.write()
    cache = runtime.root / ".cache" / "seccomp"
    outs = [runtime.run(bundle, check=False).stdout]
    (program,) = cache.iterdir()
    outs.append(runtime.run(bundle, check=False).stdout)
    bundle.config["process"]["args"] = ["sleep", "100"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    outs.append(runtime("exec", cid, "sh", "-c", "mkdir /tmp/y 2>&1; echo rc=$?", check=False,
                        stdin=subprocess.DEVNULL).stdout)
    runtime("delete", "--force", cid)
    assert list(cache.iterdir()) == [program]
    for out in outs:
        assert os.strerror(errno.EXDEV) in out and "rc=1" in out


def test_integration_errno_ret(runtime, bundle):
    bundle.config["process"]["args"] = [
        "/bin/sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?; echo still-running"]
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.EXDEV}]}
    bundle.write()
    out = runtime.run(bundle, check=False).stdout
    assert os.strerror(errno.EXDEV) in out  # "Invalid cross-device link"
    assert "rc=1" in out and "still-running" in out


def test_integration_listener_agent_answers_a_notified_syscall(runtime, bundle, tmp_path):
    """listenerPath: the agent gets the container state and the notify fd, and its answer is
    what mkdir returns inside the container."""
    import threading
    from conftest import is_pyruntime
    if not is_pyruntime():
        pytest.skip("runc 1.1.5 checks listenerPath differently; this exercises pyruntime's agent protocol")
    sock_path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    got = {}

    def agent():
        conn, _ = server.accept()
        with conn:
            import array
            fds = array.array("i")
            data, anc, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:fds.itemsize])
            got["state"] = json.loads(data)
            n = seccomp_agent.notify_answer(fds[0], error=errno.EXDEV)
            got["syscall"] = n.syscall if hasattr(n, "syscall") else None
            os.close(fds[0])

    t = threading.Thread(target=agent, daemon=True)
    t.start()
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock_path, "listenerMetadata": "hello",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    bundle.config["process"]["args"] = ["sh", "-c", "mkdir /tmp/x 2>&1; test -d /tmp/x || echo absent"]
    bundle.write()
    cid = runtime.new_id()
    out = runtime.run(bundle, cid).stdout
    t.join(10)
    server.close()
    assert "cross-device" in out and "absent" in out, out
    assert got["state"]["metadata"] == "hello"
    assert got["state"]["fds"] == ["seccompFd"]
    assert got["state"]["state"]["id"] == cid


@pytest.mark.parametrize("nnp", [True, False])
def test_integration_listener_agent_gets_an_execs_notify_fd(runtime, bundle, tmp_path, nnp):
    """An exec'd process gets the container's filter and its own notify fd, handed to the
    agent as the init's is (runc's seccomp-notify.bats), with and without no_new_privs."""
    import array
    import threading
    sock_path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(2)
    states, answered = [], []

    def answer(fd):
        try:
            seccomp_agent.notify_answer(fd, error=errno.EXDEV)
            answered.append(fd)
        except (OSError, RuntimeError):
            pass  # the process went away unnotified (the init: sleep makes no mkdir)

    def agent():
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                fds = array.array("i")
                data, anc, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(fds.itemsize))
                for level, kind, payload in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(payload[:fds.itemsize])
                states.append(json.loads(data))
                threading.Thread(target=answer, args=(fds[0],), daemon=True).start()

    t = threading.Thread(target=agent, daemon=True)
    t.start()
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock_path,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    bundle.config["process"]["args"] = ["sleep", "60"]
    bundle.config["process"]["noNewPrivileges"] = nnp
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    out = runtime("exec", cid, "sh", "-c", "mkdir /tmp/y 2>&1; test -d /tmp/y || echo absent",
                  stdin=subprocess.DEVNULL).stdout
    t.join(10)
    server.close()
    runtime("delete", "--force", cid)
    assert "cross-device" in out and "absent" in out, out
    assert len(states) == 2 and len(answered) == 1
    init_pid = states[0]["pid"]
    assert states[1]["state"]["id"] == cid and states[1]["pid"] not in (init_pid, 0, 1)
