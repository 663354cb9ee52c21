"""Server mode (`run --server`, or PYRUNTIME_E2E_SERVER=1): a warm `pyruntime --debug server`
for every --root the engines give pyruntime, so that the same scenarios run their creates
through it wherever it serves them (and in-process wherever it refuses, as without a server).

The roots, as the runtime's argv shows them (the engines pass the same root to runc):
  docker   <exec-root>/runtime-runc/moby for every runtime registered with dockerd, by flag or by
           daemon.json (whose runtimeArgs come before the shim's own --root, so they cannot move
           it); pyruntime-3.13's client is of another version: the server refuses it
  ctr      /run/containerd/runc/<namespace>, the runc shim's, for --runc-binary too
  podman   no --root at all: pyruntime's default, /run/pyruntime
Each server's --debug output, one line per request, is its log under the harness's logs dir.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time

import daemons

DEFAULT_ROOT = "/run/pyruntime"  # pyruntime/lifecycle/layout.py


def roots(d: daemons.Daemons) -> dict[str, str]:
    return {"docker": os.path.join(d.dir, "docker/exec/runtime-runc/moby"),
            "ctr": "/run/containerd/runc/e2e",
            "podman": DEFAULT_ROOT}


def tally(lines) -> dict:
    out = {"served": 0, "refused": collections.Counter(), "failed": 0, "other": []}
    for ln in lines:
        if not ln.startswith("pyruntime server: ") or " serving " in ln:
            continue
        if ": served in " in ln:
            out["served"] += 1
        elif ": refused: " in ln:
            out["refused"][ln.split(": refused: ", 1)[1].strip()] += 1
        elif ": failed" in ln:
            out["failed"] += 1
        else:
            out["other"].append(ln.strip())  # the client went away, internal error
    return out


class Server:
    def __init__(self, engine: str, root: str, binary: str, logs: str):
        self.engine, self.root = engine, root
        self.log = os.path.join(logs, f"server-{engine}.log")
        with open(self.log, "w") as out, daemons._spawn_lock:
            # registered as ours: the orphan reaper must not take its exit status
            self.proc = subprocess.Popen([binary, "--root", root, "--debug", "server"],
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            daemons._children.append(self.proc)
        deadline = time.monotonic() + 30
        while " serving " not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise daemons.Unavailable(f"pyruntime server for {root} did not start: "
                                          f"{self.text().strip()[-300:]}")
            time.sleep(0.02)

    def text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = f"hung, killed ({self.proc.wait()})"
        with daemons._spawn_lock:
            if self.proc in daemons._children:
                daemons._children.remove(self.proc)
        t = tally(self.lines())
        left = os.path.exists(os.path.join(self.root, "@server"))
        return {"engine": self.engine, "root": self.root, "exit": code, "left_socket_dir": left,
                "served": t["served"], "refused": dict(t["refused"]), "failed": t["failed"],
                "other": t["other"], "log": self.log}


class Servers:
    """The servers of one harness run, and which requests came during which scenario."""

    def __init__(self, d: daemons.Daemons, binary: str):
        self.servers: list[Server] = []
        self.lock = threading.Lock()
        try:
            for engine, root in roots(d).items():
                self.servers.append(Server(engine, root, binary, d.logs))
        except BaseException:
            self.stop()
            raise

    def mark(self) -> list[int]:
        return [len(s.lines()) for s in self.servers]

    def since(self, mark: list[int]) -> dict:
        """What the servers logged since mark: served/refused/failed, per engine. With --jobs > 1
        a request of a scenario running at the same time may be counted here too."""
        out = {}
        for s, n in zip(self.servers, mark):
            t = tally(s.lines()[n:])
            if t["served"] or t["refused"] or t["failed"] or t["other"]:
                out[s.engine] = {"served": t["served"], "refused": dict(t["refused"]),
                                 "failed": t["failed"], "other": t["other"]}
        return out

    def stop(self) -> list[dict]:
        return [s.stop() for s in self.servers]


def verdict(summary: list[dict]) -> str:
    """'' when the servers did their job: stopped cleanly, no internal error, served something."""
    problems = []
    for s in summary:
        if s["exit"] != 0:
            problems.append(f"the {s['engine']} server ({s['root']}) exited {s['exit']}")
        if s["left_socket_dir"]:
            problems.append(f"the {s['engine']} server left {s['root']}/@server")
        bad = [ln for ln in s["other"] if "internal error" in ln]
        if bad:
            problems.append(f"{s['engine']}: {bad[0]}")
    if not sum(s["served"] for s in summary):
        problems.append("the servers served nothing")
    return "; ".join(problems)
