"""linux.netDevices: a host interface moves into the container's network namespace (renamed,
with its addresses, up); checked from inside a real container. This kernel has no dummy
driver: each test makes a veth pair and moves one end."""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed, run_sh, set_sh


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.fixture
def veth():
    """(host end, end to move); the moved end carries 10.213.7.2/24 and fd00:213::2/64."""
    tag = uuid.uuid4().hex[:6]
    host, moved = f"pyrth{tag}", f"pyrtc{tag}"
    subprocess.run(["ip", "link", "add", host, "type", "veth", "peer", "name", moved], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.213.7.2/24", "dev", moved], check=True)
        subprocess.run(["ip", "addr", "add", "fd00:213::2/64", "dev", moved, "nodad"],
                       check=True)
        yield host, moved
    finally:
        # the pair may vanish under us: a namespace that held one end is freed asynchronously
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        assert not _link_exists(host) and not _link_exists(moved)


def test_device_moves_renamed_with_its_addresses(runtime, bundle, veth):
    host, moved = veth
    bundle.config["linux"]["netDevices"] = {moved: {"name": "eth0"}}
    out = run_sh(runtime, bundle, "ip -o addr show dev eth0; cat /sys/class/net/eth0/flags; "
                 "ls /sys/class/net")
    assert "inet 10.213.7.2/24" in out and "inet6 fd00:213::2/64" in out, out
    flags = [line for line in out.splitlines() if line.startswith("0x")][0]
    assert int(flags, 16) & 0x1, "the device is not up"
    assert moved not in out.split()
    # `run` deleted the container: its namespace is gone, and the veth with it (the spec
    # forbids moving it out; the kernel destroys virtual devices with the namespace)
    deadline = time.monotonic() + 5
    while _link_exists(host) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _link_exists(host) and not _link_exists(moved)


def test_device_keeps_its_name_without_name(runtime, bundle, veth):
    host, moved = veth
    bundle.config["linux"]["netDevices"] = {moved: {}}
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    pid = runtime.state(cid)["pid"]
    inside = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "addr", "show", moved],
                            capture_output=True, text=True, check=True).stdout
    assert "10.213.7.2/24" in inside
    assert not _link_exists(moved)  # gone from the host
    runtime("delete", "--force", cid)


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_missing_device_is_an_error(runtime, bundle):
    bundle.config["linux"]["netDevices"] = {"pyrt-none0": {"name": "eth0"}}
    set_sh(bundle, "true")
    cid = runtime.new_id()
    r = runtime("run", "--bundle", bundle.path, cid, check=False)
    assert_failed(r, "linux.netDevices['pyrt-none0']: no network device 'pyrt-none0' on the host")
    assert r.returncode == 1 and not (runtime.root / cid).exists()


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_name_taken_inside_is_an_error(runtime, bundle, veth):
    host, moved = veth
    bundle.config["linux"]["netDevices"] = {moved: {"name": "lo"}}
    set_sh(bundle, "true")
    r = runtime("run", "--bundle", bundle.path, runtime.new_id(), check=False)
    assert_failed(r, f"linux.netDevices['{moved}'].name: 'lo' already exists")


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_needs_a_network_namespace(runtime, bundle):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"]
                                            if n["type"] != "network"]
    bundle.config["linux"]["netDevices"] = {"eth9": {}}
    set_sh(bundle, "true")
    r = runtime("run", "--bundle", bundle.path, runtime.new_id(), check=False)
    assert_failed(r, "config.json: linux.netDevices: ")
    assert "needs a network namespace" in r.stderr


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's import graph")
def test_pyroute2_only_for_net_devices():
    """The hot path never imports pyroute2 (test_hot_path.py); config parsing neither."""
    code = ("import sys; from pyruntime.oci import config; "
            "assert 'pyroute2' not in sys.modules and 'pyruntime.linux.netdev' not in sys.modules")
    subprocess.run(["python3", "-c", code], check=True)
