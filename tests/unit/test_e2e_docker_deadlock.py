"""The e2e harness tells docker's own libnetwork deadlock from a runtime's failure.

The dump below is cut from the dockerd that a CI run of the e2e harness left stuck (two
containers, one per runtime, exited at the same instant): its two blocked goroutines.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "e2e_daemons", Path(__file__).parents[2] / "conformance" / "e2e" / "daemons.py")
daemons = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(daemons)

WATCH_LOOP = """goroutine 68 [semacquire, 16 minutes]:
sync.(*Mutex).Lock(...)
github.com/docker/libnetwork.(*network).ID(0xc00080a960?)
github.com/docker/libnetwork.(*controller).processEndpointDelete(0xc000157200, 0xc0011a1f80?)
github.com/docker/libnetwork.(*controller).watchLoop(0xc000157200)
"""
SANDBOX_LEAVE = """goroutine 4842 [semacquire, 16 minutes]:
sync.(*Mutex).Lock(...)
github.com/docker/libnetwork.(*network).getSvcRecords(0xc00075f180, 0x55da33f02200)
github.com/docker/libnetwork.(*endpoint).sbLeave(0xc0014d9200?, 0xc0014d9200, 0x0)
github.com/docker/libnetwork.(*sandbox).delete(0xc0014d9200, 0x0)
"""
IDLE = """goroutine 1 [chan receive, 16 minutes]:
main.main()
"""


def test_both_sides_blocked_for_minutes_is_the_deadlock():
    assert daemons.libnetwork_deadlocked("\n".join([IDLE, WATCH_LOOP, SANDBOX_LEAVE]))


def test_one_side_alone_is_not():
    assert not daemons.libnetwork_deadlocked("\n".join([IDLE, WATCH_LOOP]))
    assert not daemons.libnetwork_deadlocked("\n".join([IDLE, SANDBOX_LEAVE]))


def test_a_lock_held_for_an_instant_is_not():
    fresh = WATCH_LOOP.replace("[semacquire, 16 minutes]", "[semacquire]")
    assert not daemons.libnetwork_deadlocked("\n".join([fresh, SANDBOX_LEAVE]))
