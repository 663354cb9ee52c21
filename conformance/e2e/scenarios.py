"""The scenarios. Each runs once per runtime (pyruntime, and runc as the reference) and returns
an observation: a short string that must be the same for both (plus, optionally, an `expect`
that runc's and pyruntime's observation must both satisfy) and, optionally, information shown but
not compared (timings). Names, ids, pts numbers and the like are normalized away by each scenario.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

from daemons import DOCKER, PY313_LAUNCHER, PY313_RUNTIME, sh


@dataclass
class Runtime:
    name: str      # pyruntime | runc
    short: str     # py | rc
    docker: str    # the name registered with dockerd
    docker_cfg: str  # the name registered through daemon.json (pyruntime) or the same
    path: str      # the binary (ctr --runc-binary, podman --runtime)
    port: int      # host port for -p (scenarios of both runtimes run side by side)


@dataclass
class Scenario:
    name: str
    fn: Callable
    group: str
    expect: object = None   # str, or callable(obs) -> bool


SCENARIOS: list[Scenario] = []


def scenario(name: str, group: str = "docker", expect=None):
    def deco(fn):
        SCENARIOS.append(Scenario(name, fn, group, expect))
        return fn
    return deco


@dataclass
class R:
    rc: int
    out: str
    err: str
    secs: float

    @property
    def o(self) -> str:
        return self.out.strip()

    @property
    def e(self) -> str:
        return self.err.strip()


_NOISE = re.compile(r"^(WARNING: IPv4 forwarding is disabled.*|WARNING: Your kernel does not "
                    r"support.*|WARNING: No swap limit.*)\n?", re.M)


class Ctx:
    """One scenario with one runtime."""

    def __init__(self, h, rt: Runtime, scn: Scenario):
        self.h, self.rt, self.scn = h, rt, scn
        self.slug = re.sub(r"[^a-z0-9]+", "-", scn.name.lower()).strip("-")
        self.containers: list[str] = []
        self.cleanups: list[Callable] = []
        self.img = h.images["docker"]

    def name(self, suffix: str = "") -> str:
        n = f"e2e-{self.slug}-{self.rt.short}{suffix}"
        self.containers.append(n)
        return n

    def cmd(self, argv, input=None, timeout=60, env=None) -> R:
        t0 = time.monotonic()
        try:
            p = sh(argv, input=input, timeout=timeout, env=env or self.h.env)
        except subprocess.TimeoutExpired as e:
            return R(-9, _s(e.stdout), _s(e.stderr) + f"\n(timed out after {timeout}s)",
                     time.monotonic() - t0)
        return R(p.returncode, p.stdout, _NOISE.sub("", p.stderr), time.monotonic() - t0)

    def docker(self, *args, **kw) -> R:
        return self.cmd([DOCKER, *args], **kw)

    def drun(self, *args, **kw) -> R:
        return self.docker("run", "--runtime", self.rt.docker, *args, **kw)

    def script(self, command: str, timeout=60) -> R:
        """Run a command under a pseudo-terminal (script(1)), for -it."""
        # stdin stays open and empty: at EOF script(1) would type ^D into the terminal
        r, w = os.pipe()
        t0 = time.monotonic()
        try:
            p = sh(["script", "-qec", command, "/dev/null"], stdin=r, timeout=timeout,
                   env=self.h.env)
        except subprocess.TimeoutExpired as e:
            return R(-9, _s(e.stdout), f"(timed out after {timeout}s)", time.monotonic() - t0)
        finally:
            os.close(r)
            os.close(w)
        out = p.stdout.replace("\r", "")
        out = "\n".join(line for line in _NOISE.sub("", out).splitlines() if line.strip())
        return R(p.returncode, out, p.stderr,
                 time.monotonic() - t0)

    def inspect(self, name: str, fmt: str) -> str:
        return self.docker("inspect", "-f", fmt, name).o

    def running(self, *args: str, name: str | None = None, image: str | None = None) -> str:
        """docker run -d ...; wait until running; returns the name."""
        name = name or self.name()
        r = self.drun("-d", "--name", name, *args[:-1], image or self.img, *shlex.split(args[-1]))
        if r.rc:
            raise Fail(f"docker run -d: rc={r.rc} {r.e}")
        return name

    def ctr(self, *args, **kw) -> R:
        return self.cmd(["ctr", "-a", self.h.d.containerd_sock, "-n", "e2e", *args], **kw)

    def podman(self, *args, **kw) -> R:
        return self.cmd([*self.h.podman_base, "--runtime", self.rt.path, *args],
                        env=self.h.podman_env, **kw)

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:
                pass
        if self.containers:
            self.docker("rm", "-f", "-v", *self.containers, timeout=60)


class Fail(Exception):
    pass


def _s(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def wait_for(pred, timeout=10.0, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def err_class(text: str) -> str:
    """The part of an error message Docker's CLI derives the exit code from."""
    for key in ("executable file not found", "no such file or directory", "permission denied"):
        if key in text:
            return key
    return "other" if text.strip() else ""


def norm_pts(text: str) -> str:
    return re.sub(r"/dev/pts/\d+", "/dev/pts/N", text.replace("\r", ""))


def host_ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def cgroup_file(controller: str, cid: str, name: str) -> str:
    """A host-side cgroup v1 file of a Docker container (cgroupsPath /docker/<id>)."""
    try:
        with open(f"/sys/fs/cgroup/{controller}/docker/{cid}/{name}") as f:
            return f.read().strip()
    except OSError as e:
        return f"<{e.strerror}>"


# ===================================================================== docker

@scenario("docker run --rm", expect="rc=0 out=hello left=0")
def _(c: Ctx):
    n = c.name()
    r = c.drun("--rm", "--name", n, c.img, "echo", "hello")
    left = c.docker("ps", "-aq", "--filter", f"name=^{n}$").o
    return f"rc={r.rc} out={r.o} left={len(left.split())}", f"{r.secs:.2f}s"


@scenario("docker daemon.json runtimes", expect="rc=0 out=registered")
def _(c: Ctx):
    r = c.docker("run", "--rm", "--runtime", c.rt.docker_cfg, c.img, "echo", "registered")
    return f"rc={r.rc} out={r.o}"


@scenario("docker run -d", expect="rc=0 status=running id=64")
def _(c: Ctx):
    n = c.name()
    r = c.drun("-d", "--name", n, c.img, "sleep", "300")
    return f"rc={r.rc} status={c.inspect(n, '{{.State.Status}}')} id={len(r.o)}"


@scenario("docker create + start -a", expect="rc=0 out=started")
def _(c: Ctx):
    n = c.name()
    c.docker("create", "--runtime", c.rt.docker, "--name", n, c.img, "echo", "started")
    r = c.docker("start", "-a", n)
    return f"rc={r.rc} out={r.o}"


@scenario("docker run -i (stdin)", expect="rc=0 out=line1|line2|done")
def _(c: Ctx):
    r = c.drun("--rm", "-i", c.img, "sh", "-c", "cat; echo done", input="line1\nline2\n")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker run -t (no tty on the client)")
def _(c: Ctx):
    r = c.drun("--rm", "-t", c.img, "sh", "-c", "tty; echo ok; exit 3")
    return f"rc={r.rc} out={'|'.join(norm_pts(r.o).splitlines())}"


@scenario("docker run -it (under script)", expect="rc=0 out=/dev/pts/N|ok|size=24 80")
def _(c: Ctx):
    r = c.script(f"stty rows 24 cols 80; {DOCKER} run --rm -it --runtime {c.rt.docker} {c.img} "
                 "sh -c 'tty; echo ok; sleep 0.5; echo size=$(stty size)'")
    return f"rc={r.rc} out={'|'.join(norm_pts(r.o).splitlines())}"


for code in (0, 1, 42):
    @scenario(f"docker exit code {code}", expect=f"rc={code}")
    def _(c: Ctx, code=code):
        return f"rc={c.drun('--rm', c.img, 'sh', '-c', f'exit {code}').rc}"


@scenario("docker exit code 127 (missing binary)",
          expect="rc=127 err=no such file or directory left=0")
def _(c: Ctx):
    n = c.name()
    r = c.drun("--rm", "--name", n, c.img, "/no/such/binary")
    left = c.docker("ps", "-aq", "--filter", f"name=^{n}$").o
    return f"rc={r.rc} err={err_class(r.e)} left={len(left.split())}"


@scenario("docker exit code 127 (not in PATH)", expect="rc=127 err=executable file not found")
def _(c: Ctx):
    r = c.drun("--rm", c.img, "nosuchcommand")
    return f"rc={r.rc} err={err_class(r.e)}"


@scenario("docker exit code 126 (not executable)", expect="rc=126 err=permission denied")
def _(c: Ctx):
    r = c.drun("--rm", c.img, "/bin/noexec.sh")
    return f"rc={r.rc} err={err_class(r.e)}"


@scenario("docker exec", expect="rc=3 out=2")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("exec", n, "sh", "-c", "echo $((1+1)); exit 3")
    return f"rc={r.rc} out={r.o}"


@scenario("docker exec -t", expect="rc=0 out=/dev/pts/N")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("exec", "-t", n, "tty")
    return f"rc={r.rc} out={norm_pts(r.o)}"


@scenario("docker exec -it (under script)", expect="rc=5 out=/dev/pts/N|in")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.script(f"{DOCKER} exec -it {n} sh -c 'tty; echo in; exit 5'")
    return f"rc={r.rc} out={'|'.join(norm_pts(r.o).splitlines())}"


@scenario("docker exec -i (stdin)", expect="rc=0 out=abc")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("exec", "-i", n, "cat", input="abc")
    return f"rc={r.rc} out={r.o}"


@scenario("docker exec -u -w -e", expect="rc=0 out=1000|1000|/tmp|bar")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("exec", "-u", "1000:1000", "-w", "/tmp", "-e", "FOO=bar", n,
                 "sh", "-c", "id -u; id -g; pwd; echo $FOO")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker exec lands in the container", expect="rc=0 out=sleep|same-pidns|same-cgroup")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("exec", n, "sh", "-c",
                 'cat /proc/1/comm; [ "$(readlink /proc/1/ns/pid)" = "$(readlink /proc/self/ns/pid)" ]'
                 ' && echo same-pidns; [ "$(cat /proc/1/cgroup)" = "$(cat /proc/self/cgroup)" ] '
                 '&& echo same-cgroup')
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker exec missing binary", expect=lambda o: o.startswith("rc=12"))
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("exec", n, "/no/such/binary")
    return f"rc={r.rc} err={err_class(r.e)}"


@scenario("docker stop (SIGTERM handled)", expect="rc=0 exit=7 fast=True")
def _(c: Ctx):
    n = c.running("sh -c 'trap \"exit 7\" TERM; echo ready; while :; do sleep 0.1; done'")
    wait_for(lambda: "ready" in c.docker("logs", n).out)
    r = c.docker("stop", "-t", "10", n)
    return (f"rc={r.rc} exit={c.inspect(n, '{{.State.ExitCode}}')} fast={r.secs < 3}",
            f"{r.secs:.1f}s")


@scenario("docker stop -t 1 (TERM ignored, then KILL)", expect="rc=0 exit=137 about1s=True")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("stop", "-t", "1", n)
    return (f"rc={r.rc} exit={c.inspect(n, '{{.State.ExitCode}}')} "
            f"about1s={0.8 <= r.secs < 4}", f"{r.secs:.1f}s")


@scenario("docker kill -s USR1", expect="rc=0 got=True status=running")
def _(c: Ctx):
    n = c.running("sh -c 'trap \"echo got-usr1\" USR1; echo ready; while :; do sleep 0.1; done'")
    wait_for(lambda: "ready" in c.docker("logs", n).out)
    r = c.docker("kill", "-s", "USR1", n)
    got = wait_for(lambda: "got-usr1" in c.docker("logs", n).out, 5)
    return f"rc={r.rc} got={got} status={c.inspect(n, '{{.State.Status}}')}"


@scenario("docker kill (SIGKILL)", expect="rc=0 exit=137")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("kill", n)
    wait_for(lambda: c.inspect(n, "{{.State.Status}}") == "exited", 10)
    return f"rc={r.rc} exit={c.inspect(n, '{{.State.ExitCode}}')}"


@scenario("docker pause / unpause",
          expect="paused=paused/FROZEN unpaused=running/THAWED ticks=True")
def _(c: Ctx):
    n = c.running("sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/t; sleep 0.05; done'")
    cid = c.inspect(n, "{{.Id}}")
    c.docker("pause", n)
    p = f"{c.inspect(n, '{{.State.Status}}')}/{cgroup_file('freezer', cid, 'freezer.state')}"
    c.docker("unpause", n)
    u = f"{c.inspect(n, '{{.State.Status}}')}/{cgroup_file('freezer', cid, 'freezer.state')}"
    t1 = c.docker("exec", n, "cat", "/tmp/t").o
    time.sleep(0.3)
    t2 = c.docker("exec", n, "cat", "/tmp/t").o
    return f"paused={p} unpaused={u} ticks={t1 != t2}"


@scenario("docker update --memory --cpus --pids-limit",
          expect="rc=0 mem=67108864 memsw=134217728 quota=50000 period=100000 pids=50 "
                 "inside=67108864")
def _(c: Ctx):
    n = c.running("sleep 300")
    cid = c.inspect(n, "{{.Id}}")
    r = c.docker("update", "--memory", "64m", "--memory-swap", "128m", "--cpus", "0.5",
                 "--pids-limit", "50", n)
    inside = c.docker("exec", n, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").o
    return (f"rc={r.rc}{' ' + r.e if r.rc else ''} "
            f"mem={cgroup_file('memory', cid, 'memory.limit_in_bytes')} "
            f"memsw={cgroup_file('memory', cid, 'memory.memsw.limit_in_bytes')} "
            f"quota={cgroup_file('cpu', cid, 'cpu.cfs_quota_us')} "
            f"period={cgroup_file('cpu', cid, 'cpu.cfs_period_us')} "
            f"pids={cgroup_file('pids', cid, 'pids.max')} inside={inside}")


@scenario("docker top", expect="rc=0 cmds=sleep 300|sleep 301")
def _(c: Ctx):
    n = c.running("sleep 300")
    c.docker("exec", "-d", n, "sleep", "301")
    wait_for(lambda: "301" in c.docker("top", n).out, 5)
    r = c.docker("top", n)
    lines = r.o.splitlines()
    col = lines[0].index("CMD") if lines and "CMD" in lines[0] else 0
    cmds = sorted(line[col:].strip() for line in lines[1:])
    return f"rc={r.rc} cmds={'|'.join(cmds)}"


@scenario("docker stats --no-stream", expect="rc=0 pids=1 mem>0=True")
def _(c: Ctx):
    n = c.running("sleep 300")
    r = c.docker("stats", "--no-stream", "--format", "{{.PIDs}} {{.MemUsage}}", n)
    f = r.o.split()
    mem = f[1] if len(f) > 1 else ""
    nonzero = bool(re.match(r"[0-9.]+[KMG]i?B", mem)) and not re.match(r"0(\.0+)?[KMG]?i?B", mem)
    return (f"rc={r.rc} pids={f[0] if f else ''} mem>0={nonzero}", r.o)


@scenario("docker restart", expect="rc=0 status=running newpid=True")
def _(c: Ctx):
    n = c.running("sleep 300")
    pid1 = c.inspect(n, "{{.State.Pid}}")
    r = c.docker("restart", "-t", "1", n)
    pid2 = c.inspect(n, "{{.State.Pid}}")
    return (f"rc={r.rc} status={c.inspect(n, '{{.State.Status}}')} "
            f"newpid={pid1 != pid2 and pid2 not in ('', '0')}")


@scenario("docker rm -f (running)", expect="rc=0 gone=True cgroup-gone=True state-gone=True")
def _(c: Ctx):
    n = c.running("sleep 300")
    cid = c.inspect(n, "{{.Id}}")
    r = c.docker("rm", "-f", n)
    gone = not c.docker("ps", "-aq", "--filter", f"name=^{n}$").o
    cg = not os.path.exists(f"/sys/fs/cgroup/memory/docker/{cid}")
    st = not os.path.exists(os.path.join(c.h.d.dir, "docker/exec/runtime-runc/moby", cid))
    return f"rc={r.rc} gone={gone} cgroup-gone={cg} state-gone={st}"


@scenario("docker logs", expect="rc=0 out=out1|out2 err=err1")
def _(c: Ctx):
    n = c.name()
    c.drun("-d", "--name", n, c.img, "sh", "-c", "echo out1; echo err1 >&2; echo out2")
    c.docker("wait", n)
    r = c.docker("logs", n)
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())} err={'|'.join(r.e.splitlines())}"


@scenario("docker wait (exit status)", expect="rc=0 out=5")
def _(c: Ctx):
    n = c.name()
    c.drun("-d", "--name", n, c.img, "sh", "-c", "sleep 0.3; exit 5")
    r = c.docker("wait", n)
    return f"rc={r.rc} out={r.o}"


@scenario("docker run --pid host", expect="rc=0 pidns=host sees-host-pid1=True")
def _(c: Ctx):
    r = c.drun("--rm", "--pid", "host", c.img, "sh", "-c",
               "readlink /proc/self/ns/pid; cat /proc/1/cmdline | head -c 200")
    lines = r.o.splitlines() + ["", ""]
    with open("/proc/1/cmdline") as f:
        host1 = f.read()[:200].replace("\0", "")
    return (f"rc={r.rc} pidns={'host' if lines[0] == host_ns('pid') else 'other'} "
            f"sees-host-pid1={lines[1].replace(chr(0), '') == host1}")


@scenario("docker run --network host / none", expect="host: rc=0 netns=host | none: rc=0 ifaces=lo")
def _(c: Ctx):
    r = c.drun("--rm", "--network", "host", c.img, "readlink", "/proc/self/ns/net")
    r2 = c.drun("--rm", "--network", "none", c.img, "sh", "-c",
                "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '")
    return (f"host: rc={r.rc} netns={'host' if r.o == host_ns('net') else 'other'} | "
            f"none: rc={r2.rc} ifaces={r2.o.strip()}")


@scenario("docker run --read-only",
          expect="rc=0 out=touch: /x: Read-only file system|root-rc=1|tmp-rc=0")
def _(c: Ctx):
    r = c.drun("--rm", "--read-only", "--tmpfs", "/tmp", c.img, "sh", "-c",
               "touch /x 2>&1; echo root-rc=$?; touch /tmp/x; echo tmp-rc=$?")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker run --tmpfs", expect="rc=0 out=tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,"
          "size=1024k 0 0|ok")
def _(c: Ctx):
    r = c.drun("--rm", "--tmpfs", "/run:rw,size=1m,mode=1777", c.img, "sh", "-c",
               "grep ' /run ' /proc/mounts; touch /run/x && echo ok")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker run --user", expect="1000:1000 -> rc=0 uid=1000(user) gid=1000(user) groups=1000(user) | "
          "nobody -> rc=0 uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup) | "
          "4242 -> rc=0 uid=4242 gid=0(root) groups=0(root) | "
          "1000 --group-add 1 -> rc=0 uid=1000(user) gid=1000(user) groups=1(daemon),1000(user)")
def _(c: Ctx):
    out = []
    for args in (["--user", "1000:1000"], ["--user", "nobody"], ["--user", "4242"],
                 ["--user", "1000", "--group-add", "1"]):
        r = c.drun("--rm", *args, c.img, "id")
        out.append(f"{' '.join(args).replace('--user ', '')} -> rc={r.rc} {r.o or r.e}")
    return " | ".join(out)


@scenario("docker run --cap-drop / --cap-add",
          expect=lambda o: "chown-rc=1" in o and "net_admin-rc=0" in o)
def _(c: Ctx):
    r = c.drun("--rm", "--cap-drop", "CHOWN", "--cap-drop", "NET_RAW", c.img, "sh", "-c",
               "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | tr '\\t\\n' ': '; "
               "chown 1000 /tmp 2>/dev/null; echo chown-rc=$?")
    r2 = c.drun("--rm", "--cap-add", "NET_ADMIN", c.img, "sh", "-c",
                "ip link set lo mtu 1500; echo net_admin-rc=$?")
    return f"rc={r.rc} {r.o} | rc={r2.rc} {r2.o}"


@scenario("docker run --ulimit", expect="rc=0 out=50 60|100 200")
def _(c: Ctx):
    r = c.drun("--rm", "--ulimit", "nofile=100:200", "--ulimit", "nproc=50:60", c.img, "sh", "-c",
               "awk '/open files|processes/ {print $(NF-2), $(NF-1)}' /proc/self/limits | sort -r")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker run -m (OOM kill reported)", expect="rc=137 oomkilled=true exit=137")
def _(c: Ctx):
    n = c.name()
    # containerd 1.6's shim watches the cgroup for OOM only once the runtime's `start` has
    # returned (containerd#8180, fixed by #12405): a process killed before then is reported
    # without OOMKilled, whichever runtime started it. The pause keeps the kill after that.
    r = c.drun("--name", n, "-m", "32m", "--memory-swap", "32m", c.img, "sh", "-c",
               "sleep 0.5; x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done", timeout=120)
    return (f"rc={r.rc} oomkilled={c.inspect(n, '{{.State.OOMKilled}}')} "
            f"exit={c.inspect(n, '{{.State.ExitCode}}')}")


@scenario("docker run -h -e -w", expect="rc=0 out=myhost|1|/tmp")
def _(c: Ctx):
    r = c.drun("--rm", "-h", "myhost", "-e", "A=1", "-w", "/tmp", c.img, "sh", "-c",
               "hostname; echo $A; pwd")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker default seccomp and masked paths",
          expect="rc=0 out=unshare-rc=1|kcore=0|sysrq=ro")
def _(c: Ctx):
    r = c.drun("--rm", c.img, "sh", "-c",
               "unshare -U true 2>/dev/null; echo unshare-rc=$?; echo kcore=$(cat /proc/kcore | wc -c);"
               " (echo x > /proc/sysrq-trigger) 2>/dev/null && echo sysrq=rw || echo sysrq=ro")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker default seccomp through the Python 3.13 launcher", expect="rc=0 seccomp=2")
def _(c: Ctx):
    runtime = c.rt.docker
    if c.rt.name == "pyruntime":
        try:
            with open(PY313_LAUNCHER) as f:
                shebang = f.readline()
        except OSError as e:
            raise Fail(f"{PY313_LAUNCHER}: {e.strerror} (tests/setup.sh writes it)")
        if "python3.13" not in shebang:
            raise Fail(f"{PY313_LAUNCHER} runs {shebang[2:].split()[0]}, not Python 3.13")
        runtime = PY313_RUNTIME
    r = c.docker("run", "--rm", "--runtime", runtime, c.img, "awk", "/^Seccomp:/{print $2}",
                 "/proc/self/status")
    return f"rc={r.rc} seccomp={r.o}" + (f" err={r.e}" if r.rc else "")


@scenario("docker run --init", expect="rc=0 out=docker-init|sleep")
def _(c: Ctx):
    r = c.drun("--rm", "--init", c.img, "sh", "-c", "cat /proc/1/comm; sleep 2 & sleep 0.3; cat /proc/$!/comm")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker run -v host:/x:ro, --device, --sysctl, --shm-size",
          expect="rc=0 out=ro-rc=1|xnull=c|fwd=1|shm=size=8192k")
def _(c: Ctx):
    d = tempfile.mkdtemp(prefix=f"ro-{c.rt.short}-", dir=c.h.d.dir)
    r = c.drun("--rm", "-v", f"{d}:/x:ro", "--device", "/dev/null:/dev/xnull",
               "--sysctl", "net.ipv4.ip_forward=1", "--shm-size", "8m", c.img, "sh", "-c",
               "touch /x/f 2>/dev/null; echo ro-rc=$?; echo xnull=$(stat -c %F /dev/xnull | cut -c1);"
               " echo fwd=$(cat /proc/sys/net/ipv4/ip_forward);"
               " echo shm=$(grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9a-z]*')")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker run --ipc/--uts host, --oom-score-adj, no-new-privileges",
          expect="rc=0 out=ipc=host|uts=host|oom=500|nnp=1")
def _(c: Ctx):
    r = c.drun("--rm", "--ipc", "host", "--uts", "host", "--oom-score-adj", "500",
               "--security-opt", "no-new-privileges", c.img, "sh", "-c",
               f"[ $(readlink /proc/self/ns/ipc) = '{host_ns('ipc')}' ] && echo ipc=host;"
               f" [ $(readlink /proc/self/ns/uts) = '{host_ns('uts')}' ] && echo uts=host;"
               " echo oom=$(cat /proc/self/oom_score_adj);"
               " echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker run --privileged")
def _(c: Ctx):
    # This machine's bounding set lacks CAP_SYS_RESOURCE: runc fails here, so must we (and
    # where it is complete, both run it).
    r = c.drun("--rm", "--privileged", c.img, "sh", "-c", "echo privileged")
    return f"rc={r.rc} out={r.o}"


@scenario("docker run --restart on-failure:2", expect="restarts=2 status=exited exit=3")
def _(c: Ctx):
    n = c.name()
    c.drun("-d", "--restart", "on-failure:2", "--name", n, c.img, "sh", "-c", "exit 3")
    wait_for(lambda: c.inspect(n, "{{.RestartCount}} {{.State.Status}}") == "2 exited", 20, 0.3)
    return (f"restarts={c.inspect(n, '{{.RestartCount}}')} "
            f"status={c.inspect(n, '{{.State.Status}}')} exit={c.inspect(n, '{{.State.ExitCode}}')}")


@scenario("docker attach + large output", expect="rc=0 lines=200000 md5-equal=True | attach=got-hello")
def _(c: Ctx):
    import hashlib
    r = c.drun("--rm", c.img, "seq", "1", "200000")
    want = "".join(f"{i}\n" for i in range(1, 200001))
    n = c.running("-i", "sh -c 'read x; echo got-$x'")
    # stdin stays open until the container exits (at EOF the CLI may leave before the output)
    a = c.cmd(["sh", "-c", f"(echo hello; sleep 5) | {DOCKER} attach {n}"], timeout=20)
    return (f"rc={r.rc} lines={len(r.out.splitlines())} "
            f"md5-equal={hashlib.md5(r.out.encode()).digest() == hashlib.md5(want.encode()).digest()}"
            f" | attach={a.o}")


@scenario("docker runs 8 containers at once", expect="rcs=0,0,0,0,0,0,0,0 outs=8")
def _(c: Ctx):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda i: c.drun("--rm", c.img, "echo", f"n{i}"), range(8)))
    return (f"rcs={','.join(str(r.rc) for r in rs)} "
            f"outs={sum(r.o == f'n{i}' for i, r in enumerate(rs))}", f"{max(r.secs for r in rs):.1f}s")


@scenario("docker stop / rm -f of a paused container",
          expect="stop: rc=0 exit=137 | rm -f: rc=0 gone=True")
def _(c: Ctx):
    n = c.running("sleep 300")
    c.docker("pause", n)
    r = c.docker("stop", "-t", "1", n)
    n2 = c.running("sleep 300", name=c.name("2"))
    c.docker("pause", n2)
    r2 = c.docker("rm", "-f", n2)
    gone = not c.docker("ps", "-aq", "--filter", f"name=^{n2}$").o
    return (f"stop: rc={r.rc} exit={c.inspect(n, '{{.State.ExitCode}}')} | "
            f"rm -f: rc={r2.rc} gone={gone}")


@scenario("docker --health-cmd (exec every second)", expect="healthy")
def _(c: Ctx):
    n = c.running("--health-cmd", "test -e /tmp", "--health-interval", "1s", "--health-retries",
                  "2", "sleep 300")
    wait_for(lambda: c.inspect(n, "{{.State.Health.Status}}") == "healthy", 15, 0.3)
    return c.inspect(n, "{{.State.Health.Status}}")


@scenario("docker --cgroupns private, seccomp=unconfined, --mount bind",
          expect="rc=0 out=cgroup=/|unshare-rc=0|bind=rshared")
def _(c: Ctx):
    d = tempfile.mkdtemp(prefix=f"prop-{c.rt.short}-", dir=c.h.d.dir)
    sh(["mount", "--bind", "--make-rshared", d, d])
    c.cleanups.append(lambda: sh(["umount", "-l", d]))
    r = c.drun("--rm", "--cgroupns", "private", "--security-opt", "seccomp=unconfined",
               "--mount", f"type=bind,source={d},target=/b,bind-propagation=rshared", c.img,
               "sh", "-c", "echo cgroup=$(grep memory /proc/self/cgroup | cut -d: -f3);"
               " unshare -U true; echo unshare-rc=$?;"
               " grep -q ' /b .*shared:' /proc/self/mountinfo && echo bind=rshared || echo bind=?")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("docker edge cases: cwd, signals, entrypoint, pids")
def _(c: Ctx):
    out = []
    for label, args in (
            ("-w missing dir", ["-w", "/does/not/exist", c.img, "pwd"]),
            ("-u 1000 -w /root", ["-u", "1000", "-w", "/root", c.img, "pwd"]),
            ("child killed by 9", [c.img, "sh", "-c", "sh -c 'kill -9 $$'; echo $?"]),
            ("pid 1 ignores TERM", [c.img, "sh", "-c", "kill -TERM $$; echo alive"]),
            ("entrypoint ''", ["--entrypoint", "", c.img, "echo", "ep"]),
            ("relative argv0", ["-w", "/bin", c.img, "./busybox", "echo", "rel"]),
            ("empty env PATH", ["-e", "PATH=", c.img, "/bin/sh", "-c", "echo $PATH"]),
            ("-i at EOF", ["-i", c.img, "cat"]),
            ("--pids-limit 8", ["--pids-limit", "8", c.img, "sh", "-c",
                                "i=0; while [ $i -lt 12 ]; do sleep 5 & i=$((i+1)); done"])):
        r = c.drun("--rm", *args, input="" if label == "-i at EOF" else None)
        out.append(f"{label}: rc={r.rc} {r.o or err_class(r.e)}")
    return " | ".join(out)


def ran_by(statedirs) -> str:
    """Which runtime keeps a container's state: pyruntime writes pyruntime.json, runc state.json."""
    for d in statedirs:
        if os.path.exists(os.path.join(d, "pyruntime.json")):
            return "pyruntime"
        if os.path.exists(os.path.join(d, "state.json")):
            return "runc"
    return "nobody"


@scenario("the runtime asked for is the one that runs",
          expect="docker=True docker-daemon.json=True ctr=True podman=True")
def _(c: Ctx):
    out = []
    for label, rtname in (("docker", c.rt.docker), ("docker-daemon.json", c.rt.docker_cfg)):
        n = c.name(label[-4:])
        c.docker("run", "-d", "--runtime", rtname, "--name", n, c.img, "sleep", "300")
        cid = c.inspect(n, "{{.Id}}")
        dirs = glob.glob(os.path.join(c.h.d.dir, "docker/exec/runtime-*/moby", cid))
        out.append(f"{label}={ran_by(dirs) == c.rt.name}")
    cid = ctr_task(c, "sleep 300")
    out.append(f"ctr={ran_by([f'/run/containerd/runc/e2e/{cid}']) == c.rt.name}")
    n = f"e2e-{c.slug}-{c.rt.short}"
    c.cleanups.append(lambda: c.podman("rm", "-f", "-t", "0", n))
    c.podman("run", "-d", "--network", "none", *PODMAN_RUN, "--name", n, PODMAN_IMG, "sleep", "300")
    pid = c.podman("inspect", "-f", "{{.Id}}", n).o
    out.append(f"podman={ran_by([f'/run/pyruntime/{pid}', f'/run/runc/{pid}']) == c.rt.name}")
    return " ".join(out)


# ===================================================================== ctr (containerd)

CTR_IMG = "docker.io/library/e2e-busybox:latest"


def ctr_run(c: Ctx, *args, **kw) -> R:
    return c.ctr("run", "--runc-binary", c.rt.path, *args, **kw)


def ctr_task(c: Ctx, cmd: str) -> str:
    cid = f"e2e-{c.slug}-{c.rt.short}"

    def rm():
        c.ctr("task", "kill", "-a", "-s", "SIGKILL", cid)
        wait_for(lambda: ctr_status(c, cid) in ("STOPPED", ""), 5)
        c.ctr("task", "delete", "-f", cid)
        c.ctr("container", "delete", cid)
    c.cleanups.append(rm)
    r = ctr_run(c, "-d", CTR_IMG, cid, *shlex.split(cmd))
    if r.rc:
        raise Fail(f"ctr run -d: rc={r.rc} {r.e}")
    wait_for(lambda: ctr_status(c, cid) == "RUNNING", 5)
    return cid


def ctr_status(c: Ctx, cid: str) -> str:
    for line in c.ctr("task", "ls").out.splitlines()[1:]:
        f = line.split()
        if f and f[0] == cid:
            return f[-1]
    return ""


@scenario("ctr run --runc-binary", group="ctr", expect="rc=0 out=hello")
def _(c: Ctx):
    r = ctr_run(c, "--rm", CTR_IMG, f"e2e-{c.slug}-{c.rt.short}", "echo", "hello")
    return f"rc={r.rc} out={r.o}"


@scenario("ctr run exit code", group="ctr", expect="rc=3")
def _(c: Ctx):
    r = ctr_run(c, "--rm", CTR_IMG, f"e2e-{c.slug}-{c.rt.short}", "sh", "-c", "exit 3")
    return f"rc={r.rc}"


@scenario("ctr run -t (under script)", group="ctr", expect="rc=0 out=/dev/pts/N|ok")
def _(c: Ctx):
    cid = f"e2e-{c.slug}-{c.rt.short}"
    r = c.script(f"ctr -a {c.h.d.containerd_sock} -n e2e run --rm -t --runc-binary {c.rt.path} "
                 f"{CTR_IMG} {cid} sh -c 'tty; echo ok'")
    return f"rc={r.rc} out={'|'.join(norm_pts(r.o).splitlines())}"


@scenario("ctr task exec", group="ctr", expect="rc=4 out=in|sleep")
def _(c: Ctx):
    cid = ctr_task(c, "sleep 300")
    # ctr stops reading the exec's fifos when the exit event arrives; under load that can beat
    # the shim's copy of the output, and runc lost it as pyruntime did. The pause keeps the
    # output ahead of the exit.
    r = c.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c",
              "echo in; cat /proc/1/comm; sleep 0.5; exit 4")
    return f"rc={r.rc} out={'|'.join(r.o.splitlines())}"


@scenario("ctr task kill", group="ctr", expect="rc=0 status=STOPPED exit=5 | -a -s 9: rc=0 STOPPED")
def _(c: Ctx):
    cid = ctr_task(c, "sh -c 'trap \"exit 5\" TERM; while :; do sleep 0.1; done'")
    time.sleep(0.3)
    r = c.ctr("task", "kill", cid)
    st = wait_for(lambda: ctr_status(c, cid) == "STOPPED" and "STOPPED", 10) or ctr_status(c, cid)
    d = c.ctr("task", "delete", cid)
    m = re.search(r"exit (?:with non-zero exit )?(?:code|status) (\d+)", d.out + d.err)
    c.ctr("container", "delete", cid)
    cid2 = ctr_task(c, "sleep 300")
    r2 = c.ctr("task", "kill", "-a", "-s", "9", cid2)
    st2 = wait_for(lambda: ctr_status(c, cid2) == "STOPPED" and "STOPPED", 10) or ctr_status(c, cid2)
    return f"rc={r.rc} status={st} exit={m.group(1) if m else '?'} | -a -s 9: rc={r2.rc} {st2}"


@scenario("ctr task pause / resume", group="ctr", expect="rc=0 PAUSED rc=0 RUNNING")
def _(c: Ctx):
    cid = ctr_task(c, "sleep 300")
    r = c.ctr("task", "pause", cid)
    s1 = ctr_status(c, cid)
    r2 = c.ctr("task", "resume", cid)
    return f"rc={r.rc} {s1} rc={r2.rc} {ctr_status(c, cid)}"


@scenario("ctr task ps", group="ctr", expect="rc=0 pids=2 init-listed=True")
def _(c: Ctx):
    cid = ctr_task(c, "sleep 300")
    c.ctr("task", "exec", "-d", "--exec-id", "e2", cid, "sleep", "301")
    time.sleep(0.3)
    r = c.ctr("task", "ps", cid)
    pids = [line.split()[0] for line in r.o.splitlines()[1:] if line.split()]
    init = ""
    for line in c.ctr("task", "ls").out.splitlines():
        if line.startswith(cid + " "):
            init = line.split()[1]
    return f"rc={r.rc} pids={len(pids)} init-listed={init in pids}"


@scenario("ctr task metrics", group="ctr", expect="rc=0 memory=True pids=True")
def _(c: Ctx):
    cid = ctr_task(c, "sleep 300")
    r = c.ctr("task", "metrics", cid)
    mem = re.search(r"memory\.usage_in_bytes\s+([1-9]\d*)", r.out) is not None
    pids = re.search(r"pids\.current\s+1\b", r.out) is not None
    return (f"rc={r.rc} memory={mem} pids={pids}", r.e[:80])


@scenario("ctr task delete leaves nothing", group="ctr", expect="rc=0 state-gone=True")
def _(c: Ctx):
    cid = f"e2e-{c.slug}-{c.rt.short}"
    r = ctr_run(c, "--rm", CTR_IMG, cid, "true")
    gone = not os.path.exists(f"/run/containerd/runc/e2e/{cid}")
    return f"rc={r.rc} state-gone={gone}"


# ===================================================================== podman

PODMAN_IMG = "localhost/e2e-busybox:latest"
# podman asks for RLIMIT_NOFILE and RLIMIT_NPROC 1048576 by default; here the hard limits are
# lower and the bounding set lacks CAP_SYS_RESOURCE, so runc and pyruntime both refuse (126).
PODMAN_RUN = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:4096"]


@scenario("podman run --runtime", group="podman", expect="rc=0 out=hello")
def _(c: Ctx):
    r = c.podman("run", "--rm", "--network", "none", *PODMAN_RUN, PODMAN_IMG, "echo", "hello")
    return f"rc={r.rc} out={r.o or r.e}"


@scenario("podman run exit code", group="podman", expect="rc=3")
def _(c: Ctx):
    r = c.podman("run", "--rm", "--network", "none", *PODMAN_RUN, PODMAN_IMG, "sh", "-c", "exit 3")
    return f"rc={r.rc}"


@scenario("podman exec", group="podman", expect="rc=0 out=5|sleep | -t: rc=0 /dev/pts/N | stop rc=0 rm rc=0")
def _(c: Ctx):
    n = f"e2e-{c.slug}-{c.rt.short}"
    c.cleanups.append(lambda: c.podman("rm", "-f", "-t", "0", n))
    r0 = c.podman("run", "-d", "--network", "none", *PODMAN_RUN, "--name", n, PODMAN_IMG, "sleep", "300")
    if r0.rc:
        raise Fail(f"podman run -d: rc={r0.rc} {r0.e}")
    r = c.podman("exec", n, "sh", "-c", "echo $((2+3)); cat /proc/1/comm")
    r2 = c.podman("exec", "-t", n, "tty")
    r3 = c.podman("stop", "-t", "1", n)
    r4 = c.podman("rm", n)
    return (f"rc={r.rc} out={'|'.join(r.o.splitlines()) or r.e} | -t: rc={r2.rc} "
            f"{norm_pts(r2.o) or r2.e} | stop rc={r3.rc} rm rc={r4.rc}")


@scenario("podman rootless run --runtime", group="podman", expect="rc=0 out=hi left=[]")
def _(c: Ctx):
    """`podman run --rm` as an unprivileged user (tests/setup.sh's pyrt-rootless): podman
    runs the runtime as root of its own user namespace, with vfs storage (rootless_user.py)."""
    import pwd
    import shutil
    import rootless_user
    try:
        pwd.getpwnam(rootless_user.USER)
    except KeyError:
        raise Fail(f"no user {rootless_user.USER}: run tests/setup.sh") from None
    pm = rootless_user.RootlessPodman(f"pyrt-e2e-rootless-{c.rt.short}-")
    c.cleanups.append(pm.close)
    runtime = c.rt.path
    if c.rt.name == "pyruntime":
        runtime = rootless_user.user_launcher(c.rt.path, pm.dir)
    tar = os.path.join(pm.dir, "busybox.tar")
    shutil.copy(c.h.images["podman-tar"], tar)
    os.chmod(tar, 0o644)
    img = "localhost/e2e-rootless:latest"
    r0 = c.cmd(pm.argv(runtime, "import", tar, img), timeout=120)
    if r0.rc:
        raise Fail(f"podman import as {rootless_user.USER}: rc={r0.rc} {r0.e[-300:]}")
    r = c.cmd(pm.argv(runtime, "run", "--rm", "--network", "none", *PODMAN_RUN, img,
                      "echo", "hi"), timeout=120)
    return f"rc={r.rc} out={r.o or r.e[-300:]} left={pm.left_in_runtime_dirs()}"


# ===================================================================== the tutorial
# Docker's "Get started" part 2/3 flow, on a python3 base image made offline from the host's
# Debian python3.11 (images.python_tar). The first scenario starts the web app; the others use it.

APP = '''import os
import socket
from http.server import BaseHTTPRequestHandler, HTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        html = "<h3>Hello {name}!</h3><b>Hostname:</b> {hostname}<br/>"
        body = html.format(name=os.getenv("NAME", "world"), hostname=socket.gethostname())
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", 80), Hello).serve_forever()
'''

DOCKERFILE = '''FROM e2e-python:latest
WORKDIR /app
ADD . /app
ENV NAME World
EXPOSE 80
CMD ["python3", "app.py"]
'''


def build_tutorial_image(h) -> str:
    d = tempfile.mkdtemp(prefix="friendlyhello-", dir=h.d.dir)
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(APP)
    with open(os.path.join(d, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE)
    r = sh([DOCKER, "build", "-t", "e2e-friendlyhello:latest", d], env=h.env)
    if r.returncode:
        raise RuntimeError(f"docker build: {r.stderr.strip()[-400:]}")
    return "e2e-friendlyhello:latest"


def tutorial_app(c: Ctx) -> tuple[str, str]:
    """The tutorial's running web app for this runtime: (name, container id)."""
    key = ("tutorial", c.rt.name)
    with c.h.shared_lock:  # the first scenario that needs it starts it; the others wait
        if key not in c.h.shared:
            n = f"e2e-tutorial-{c.rt.short}"
            c.h.shared[key] = (n, "")
            c.h.late_cleanup.append(n)
            r = c.drun("-d", "-p", f"{c.rt.port}:80", "--name", n, c.h.images["tutorial"])
            if r.rc:
                raise Fail(f"docker run -d -p: rc={r.rc} {r.e}")
            c.h.shared[key] = (n, r.o)
        n, cid = c.h.shared[key]
    if not cid:
        raise Fail("the tutorial app did not start")
    return n, cid


def http_get(url: str, timeout=15.0) -> str:
    deadline = time.monotonic() + timeout
    err = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.read().decode(errors="replace")
        except Exception as e:  # not up yet
            err = str(e)
            time.sleep(0.2)
    return f"<no answer: {err}>"


@scenario("tutorial docker run -d -p 4000:80 + HTTP", group="tutorial",
          expect="<h3>Hello World!</h3><b>Hostname:</b> <id12><br/>")
def _(c: Ctx):
    n, cid = tutorial_app(c)
    body = http_get(f"http://localhost:{c.rt.port}/")
    return (body.replace(cid[:12], "<id12>"), f"port {c.rt.port}")


@scenario("tutorial docker exec -it touch + commit", group="tutorial",
          expect="exec rc=0 commit rc=0 ls: rc=0 /app/test.txt")
def _(c: Ctx):
    n, _ = tutorial_app(c)
    r = c.script(f"{DOCKER} exec -it {n} touch test.txt")
    img = f"e2e-committed-{c.rt.short}:latest"
    c.cleanups.append(lambda: c.docker("rmi", "-f", img))
    r2 = c.docker("commit", n, img)
    r3 = c.drun("--rm", img, "ls", "/app/test.txt")
    return f"exec rc={r.rc} commit rc={r2.rc} ls: rc={r3.rc} {r3.o or r3.e}"


@scenario("tutorial -v /test (anonymous volume)", group="tutorial",
          expect="rc=0 on-host=from-container in-_data=True")
def _(c: Ctx):
    n = c.name()
    r = c.drun("--name", n, "-v", "/test", c.img, "sh", "-c", "echo from-container > /test/f")
    src = c.inspect(n, "{{range .Mounts}}{{.Source}}{{end}}")
    try:
        with open(os.path.join(src, "f")) as f:
            data = f.read().strip()
    except OSError as e:
        data = f"<{e.strerror}>"
    return f"rc={r.rc} on-host={data} in-_data={src.endswith('/_data')}"


@scenario("tutorial -v hostdir:/test", group="tutorial",
          expect="rc=0 out=from-host on-host=from-container")
def _(c: Ctx):
    d = tempfile.mkdtemp(prefix=f"hostdir-{c.rt.short}-", dir=c.h.d.dir)
    with open(os.path.join(d, "host.txt"), "w") as f:
        f.write("from-host\n")
    r = c.drun("--rm", "-v", f"{d}:/test", c.img, "sh", "-c",
               "cat /test/host.txt; echo from-container > /test/new.txt")
    try:
        with open(os.path.join(d, "new.txt")) as f:
            data = f.read().strip()
    except OSError as e:
        data = f"<{e.strerror}>"
    return f"rc={r.rc} out={r.o} on-host={data}"


@scenario("tutorial --net container:<first>", group="tutorial",
          expect="rc=0 same-netns=True ifaces-equal=True http-ok=True")
def _(c: Ctx):
    first, _ = tutorial_app(c)
    n = c.running("--net", f"container:{first}", "sleep 300")
    ifs = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '"
    a = c.docker("exec", first, "sh", "-c", f"readlink /proc/self/ns/net; {ifs}").o.splitlines()
    b = c.docker("exec", n, "sh", "-c", f"readlink /proc/self/ns/net; {ifs}").o.splitlines()
    h = c.docker("exec", n, "wget", "-qO-", "http://127.0.0.1:80/")
    return (f"rc={h.rc} same-netns={a[:1] == b[:1] and bool(a)} ifaces-equal={a[1:] == b[1:]} "
            f"http-ok={'Hello World!' in h.o}", " ".join(b[1:]))


@scenario("tutorial --cpuset-cpus 1 -m 500M", group="tutorial",
          expect="inside: 1 524288000 | host: 1 524288000")
def _(c: Ctx):
    n = c.running("--cpuset-cpus", "1", "-m", "500M", "sleep 300")
    cid = c.inspect(n, "{{.Id}}")
    inside = c.docker("exec", n, "cat", "/sys/fs/cgroup/cpuset/cpuset.cpus",
                      "/sys/fs/cgroup/memory/memory.limit_in_bytes").o.split()
    host = [cgroup_file("cpuset", cid, "cpuset.cpus"),
            cgroup_file("memory", cid, "memory.limit_in_bytes")]
    return f"inside: {' '.join(inside)} | host: {' '.join(host)}"


@scenario("tutorial /proc/<pid>/ns/net seen by exec", group="tutorial", expect="equal=True")
def _(c: Ctx):
    n, _ = tutorial_app(c)
    pid = c.inspect(n, "{{.State.Pid}}")
    try:
        host = os.readlink(f"/proc/{pid}/ns/net")
    except OSError as e:
        host = f"<{e.strerror}>"
    inside = c.docker("exec", n, "readlink", "/proc/self/ns/net").o
    return (f"equal={host == inside and host != host_ns('net')}", inside)
