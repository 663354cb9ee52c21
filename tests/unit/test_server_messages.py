"""The warm server's pieces that need no root: the config's round trip to the init (records
as JSON), what the server refuses to serve, the client's argument parsing (anything unusual
runs in-process), and that the client starts on builtin modules only."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyruntime.lean.records import from_plain, to_plain
from pyruntime.oci import config as configmod
from pyruntime.oci.defaults import default_spec
from pyruntime.server import client, wire
from pyruntime.server.daemon import unsupported
from pyruntime.server.messages import Refused

RECORDS = ("pyruntime.oci.config", "pyruntime.oci.mounts")


def parsed(tmp_path, change=None):
    raw = default_spec(terminal=False)
    if change:
        change(raw)
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return configmod.load(str(tmp_path))


def test_a_config_survives_the_trip_to_the_init(tmp_path):
    def odd(raw):
        raw["linux"]["execCPUAffinity"] = {"final": "0-1"}
        raw["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 9, "soft": 8}]
    cfg = parsed(tmp_path, odd)
    back = from_plain(json.loads(json.dumps(to_plain(cfg))), RECORDS)
    assert back == cfg
    assert back.process.rlimits[0].soft == 8


def test_only_the_named_record_modules_are_rebuilt(tmp_path):
    plain = to_plain(parsed(tmp_path))
    with pytest.raises(ValueError, match="not one this message may carry"):
        from_plain(plain, ("pyruntime.oci.mounts",))
    forged = {"\x00record": "subprocess:Popen", "args": ["true"]}
    with pytest.raises(ValueError):
        from_plain(forged, RECORDS)


@pytest.mark.parametrize("change,reason", [
    (lambda raw: raw["linux"].update(
        namespaces=raw["linux"]["namespaces"] + [{"type": "user"}],
        uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}],
        gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]), "a user namespace"),
    (lambda raw: raw["linux"]["namespaces"].remove({"type": "pid"}), "no new pid namespace"),
    (lambda raw: raw["linux"]["namespaces"].remove({"type": "mount"}), "no new mount namespace"),
    (lambda raw: raw["process"].update(terminal=True), "a terminal without --console-socket"),
])
def test_what_the_server_refuses(tmp_path, change, reason):
    unsupported(parsed(tmp_path), console=False)  # the default config is served
    with pytest.raises(Refused, match=reason):
        unsupported(parsed(tmp_path, change), console=False)


@pytest.mark.parametrize("argv", [
    ["--debug", "create", "x"], ["--systemd-cgroup", "create", "x"],
    ["--rootless", "true", "create", "x"], ["create", "--no-pivot", "x"],
    ["create", "--help"], ["create", "--bogus", "x"], ["create", "a", "b"],
    ["create", "--preserve-fds", "two", "x"], ["run", "--bogus", "x"],
])
def test_anything_unusual_runs_in_process(argv, monkeypatch):
    monkeypatch.setattr(client.posix, "geteuid", lambda: 0)
    with pytest.raises((client.Fallback, IndexError)):
        client._parse(["--root", "/nonexistent", *argv])


def test_plain_flags_are_parsed_as_runc_spells_them(monkeypatch):
    monkeypatch.setattr(client.posix, "geteuid", lambda: 0)
    ctx, cmd, opts, cid = client._parse(
        ["--root=/r", "--log", "/l", "--log-format", "json", "run", "-b", "/b", "--pid-file=/p",
         "--preserve-fds", "2", "-d", "--no-new-keyring", "c1"])
    assert (ctx.root, ctx.log, ctx.log_format, cmd, cid) == ("/r", "/l", "json", "run", "c1")
    assert opts == {"bundle": "/b", "pid_file": "/p", "console_socket": None,
                    "preserve_fds": "2", "detach": True, "no_new_keyring": True}


def test_no_server_means_in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(client.posix, "geteuid", lambda: 0)
    assert client.main(["--root", str(tmp_path), "create", "x"]) is None


def test_the_client_starts_on_builtins():
    """Until it knows a server will take the call, the client imports nothing that reads
    files beyond the package's own lean modules."""
    top = Path(__file__).resolve().parents[2]
    code = (f"import sys; sys.path.insert(0, {str(top)!r}); sys.modules_before = set(sys.modules); "
            "import pyruntime.server.client; "
            "print('\\n'.join(sorted(set(sys.modules) - sys.modules_before)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True).stdout
    ours = {m for m in out.split() if m.startswith("pyruntime")}
    others = set(out.split()) - ours
    assert ours <= {"pyruntime", "pyruntime.cli", "pyruntime.lean", "pyruntime.lean.fdpass",
                    "pyruntime.lean.jsonio", "pyruntime.lifecycle", "pyruntime.lifecycle.layout",
                    "pyruntime.server", "pyruntime.server.client", "pyruntime.server.wire"}, ours
    # (_json and _socket: shared C extensions in some builds; __future__: the annotations flag)
    assert others <= set(sys.builtin_module_names) | {"_json", "_socket", "__future__"}, others
    assert wire.VERSION.startswith("0.")


@pytest.mark.parametrize("procs,first", [(0, False), (1, True), (2, False)])
def test_the_preparer_goes_first_only_for_one_proc_mount(tmp_path, monkeypatch, procs, first):
    """Forked first, the preparer reads the init's proc context at its proc mount: with none
    the context would sit where its next message is read, with two the second has none."""
    from pyruntime.oci import config
    from pyruntime.oci.defaults import default_spec
    from pyruntime.server import remote
    (tmp_path / "rootfs").mkdir()
    raw = default_spec(args=["true"], terminal=False)
    raw["mounts"] = [m for m in raw["mounts"] if m["type"] != "proc"] + [
        {"destination": f"/proc{i or ''}", "type": "proc", "source": "proc"} for i in range(procs)]
    monkeypatch.setattr(remote, "_contexts", True)
    cfg = config.parse(raw, str(tmp_path))
    assert remote.Joiner(None, 1).preparer_first(cfg) is first
