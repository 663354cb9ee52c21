"""Turning the current (forked) process into the container's process: the steps shared by the
container init and `exec`, from rlimits to execve."""
from __future__ import annotations

import os
import stat

from pyruntime.lean import signal
from pyruntime.linux import capabilities, lsm, syscalls
from pyruntime.linux.syscalls import SYS, Sys
from pyruntime.setup import execshim
from pyruntime.errors import RuntimeFailure

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Signals Python ignores that a new program must not inherit as ignored.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
# The init catches these while it waits for `start` so that, like runc's Go init, a kill
# of a created container ends it (an ns init ignores default-action signals).
_FATAL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                  signal.SIGUSR2, signal.SIGALRM)


def die_on_signals() -> None:
    for sig in _FATAL_SIGNALS:
        signal.signal(sig, lambda s, _f: os._exit(128 + s))


def set_rlimits(rlimits) -> None:
    for rl in rlimits:
        soft = syscalls.RLIM_INFINITY if rl.soft >= 1 << 63 else rl.soft
        hard = syscalls.RLIM_INFINITY if rl.hard >= 1 << 63 else rl.hard
        try:
            syscalls.setrlimit(rl.resource, soft, hard)
        except OSError as e:
            raise RuntimeFailure(f"process.rlimits: {rl.type} soft={rl.soft} hard={rl.hard}: "
                                 f"cannot set: {os.strerror(e.errno)}", errno=e.errno) from None


def set_oom_score_adj(value: int | None) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        raise RuntimeFailure(f"process.oomScoreAdj: {value}: {e.strerror}", errno=e.errno) from None


def set_personality(personality: dict | None, sys: Sys = SYS) -> None:
    if not personality:
        return
    domains = {"LINUX": 0x0000, "LINUX32": 0x0008}
    domain = personality.get("domain")
    if domain not in domains:
        raise RuntimeFailure(f"linux.personality.domain: {domain!r} is not LINUX or LINUX32")
    try:
        sys.personality(domains[domain])
    except OSError as e:
        raise RuntimeFailure(f"linux.personality.domain: {domain}: {e.strerror}",
                             errno=e.errno) from None


def set_scheduling(proc, sys: Sys = SYS) -> None:
    sched = proc.scheduler
    if sched:
        policies = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                    "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
        policy = policies.get(sched.get("policy"))
        if policy is None or policy == 6:
            raise RuntimeFailure(f"process.scheduler.policy: {sched.get('policy')!r} is not supported")
        try:
            if "nice" in sched:
                os.setpriority(os.PRIO_PROCESS, 0, sched["nice"])
            os.sched_setscheduler(0, policy, os.sched_param(sched.get("priority", 0)))
        except OSError as e:
            raise RuntimeFailure(f"process.scheduler: {e.strerror}", errno=e.errno) from None
    prio = proc.io_priority
    if prio:
        classes = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
        cls = classes.get(prio.get("class"))
        if cls is None:
            raise RuntimeFailure(f"process.ioPriority.class: {prio.get('class')!r} is not an I/O class")
        try:
            sys.ioprio_set(1, 0, cls << 13 | int(prio.get("priority", 0)))
        except OSError as e:
            raise RuntimeFailure(f"process.ioPriority: {e.strerror}", errno=e.errno) from None


def lookup_executable(arg0: str, env: list[str]) -> str:
    """Find the program as execvp would, inside the container; fail with runc's wording (the
    docker CLI maps "not found"/"no such file" to 127 and "permission denied" to 126)."""
    if "/" in arg0:
        candidates = [arg0]
    else:
        path = DEFAULT_PATH
        for e in env:
            if e.startswith("PATH="):
                path = e[5:]
        candidates = [os.path.join(d or ".", arg0) for d in path.split(":")]
    denied = None
    for cand in candidates:
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(cand, os.X_OK):
            return cand
        denied = cand
    if denied:
        raise RuntimeFailure(f'exec: "{arg0}": permission denied')
    if "/" in arg0:
        raise RuntimeFailure(f'exec: "{arg0}": stat {arg0}: no such file or directory')
    raise RuntimeFailure(f'exec: "{arg0}": executable file not found in $PATH')


def enter_cwd(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except FileNotFoundError:
        os.makedirs(cwd, 0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as e:
        raise RuntimeFailure(f"process.cwd: {cwd!r}: {e.strerror}", errno=e.errno) from None
    # A cwd reached through a leaked fd (CVE-2024-21626) lies outside our root: getcwd(3)
    # then fails instead of returning a path.
    try:
        os.getcwd()
    except OSError:
        raise RuntimeFailure(f"process.cwd: {cwd!r} is outside the container's root") from None


def home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def build_env(proc, preserve_fds: int = 0) -> dict[str, str]:
    env = dict(e.split("=", 1) for e in proc.env)
    if "HOME" not in env:
        env["HOME"] = home_of(proc.user.uid)
    if preserve_fds:
        env.setdefault("LISTEN_FDS", str(preserve_fds))
    return env


def switch_user(user, in_user_ns: bool) -> None:
    """Groups, gid, uid; keep the permitted capabilities across setuid (capset trims them)."""
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
    try:
        if not in_user_ns or _setgroups_allowed():
            os.setgroups(user.additional_gids)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise RuntimeFailure(f"process.user: uid={user.uid} gid={user.gid}: {e.strerror}",
                             errno=e.errno) from None
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)
    os.umask(0o022 if user.umask is None else user.umask)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True


def close_fds(keep_upto: int, keep: tuple[int, ...] = ()) -> None:
    """Close every fd above keep_upto except `keep` (which must be close-on-exec)."""
    low = keep_upto + 1
    for fd in sorted(k for k in keep if k >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def ready_to_exec(proc, report_fd: int = -1, encode=None, wait=None) -> int:
    """The last steps that change nothing the process runs under until its execve: the exec
    shim made (its fd, -1 for none; see finalize_and_exec for report_fd and encode; wait:
    execshim.build's) and the bounding set dropped. The init takes them before it waits for
    `start`, as runc's takes all of its last steps, so that `start` waits for less."""
    caps = proc.capabilities
    shim = execshim.prepare(proc.args[0], report_fd, encode, wait, _FATAL_SIGNALS) \
        if execshim.wanted(proc.user, caps) else -1
    if caps is not None:
        capabilities.drop_bounding(caps)
    return shim


def finalize_and_exec(proc, path: str, env: dict, *, in_user_ns: bool, seccomp,
                      preserve_fds: int = 0, keep: tuple[int, ...] = (),
                      on_notify_fd=None, report_fd: int = -1, encode=None,
                      before_exec=None, shim: int | None = None, inherit: tuple[int, ...] = (),
                      wait_here=None) -> None:
    """The last steps, in runc's order: rlimits, user, capabilities, no_new_privs, seccomp,
    close fds, execve. `seccomp` is a filter compiled by the parent (the container's root has
    no libseccomp); `on_notify_fd(fd)` gets its listener fd, if it has one (and `keep` must
    hold the fds that callback uses). A failure is raised as a RuntimeFailure for the caller
    to report (once); the execve itself goes through execshim (CVE-2019-5736), which writes
    encode(msg) to report_fd (one of `keep`; stderr if -1) when it fails. `before_exec()` runs
    last, under all of it (the startContainer hooks). shim: ready_to_exec()'s, if it ran;
    `inherit`, more fds it needs. wait_here(): for a shim that waits for `start` itself,
    should it not run: the wait, before the plain execve."""
    set_rlimits(proc.rlimits)
    caps = proc.capabilities
    if shim is None:
        shim = ready_to_exec(proc, report_fd, encode)
    # Without no_new_privs, loading seccomp needs CAP_SYS_ADMIN, so it goes before the drop.
    if seccomp and not proc.no_new_privileges:
        _load_seccomp(seccomp, on_notify_fd)
        seccomp = None
    switch_user(proc.user, in_user_ns)
    if caps is not None:
        capabilities.apply_sets(caps)
    if proc.no_new_privileges:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    lsm.set_exec_labels(proc.apparmor_profile, proc.selinux_label)
    close_fds(2 + preserve_fds, keep + (shim,))
    if seccomp:
        _load_seccomp(seccomp, on_notify_fd)
    if before_exec:
        before_exec()
    execshim.execute(shim, path, proc.args, env, report_fd, inherit)  # only if it cannot run
    if wait_here:
        wait_here()
    refused = execshim.refuse_own_binary(path)
    if refused:
        raise RuntimeFailure(f'exec: "{proc.args[0]}": {refused}')
    try:
        os.execve(path, proc.args, env)
    except OSError as e:
        raise RuntimeFailure(f'exec: "{proc.args[0]}": {e.strerror.lower()}',
                             errno=e.errno) from None


def _load_seccomp(prog, on_notify_fd) -> None:
    from pyruntime.seccomp import kernel as seccomp_mod
    fd = seccomp_mod.install(prog)
    if fd is not None:
        if on_notify_fd:
            on_notify_fd(fd)
        os.close(fd)
