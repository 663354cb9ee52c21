"""The e2e harness gives runc, the reference, a second try when it alone misses the expected
result (ctr loses a short-lived task's output now and then, with runc too); pyruntime never
gets one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

E2E = Path(__file__).parents[2] / "conformance" / "e2e"


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(E2E))
    import harness as h
    yield h
    for name in ("harness", "daemons", "images", "scenarios", "servers", "checkpoint_scenarios"):
        sys.modules.pop(name, None)


def run(harness, monkeypatch, observations):
    """run_scenario with each runtime's observations taken in turn from `observations`."""
    calls = []

    def observe(h, rt, scn):
        calls.append(rt.name)
        return observations[rt.name].pop(0), ""
    monkeypatch.setattr(harness, "observe", observe)
    scn = harness.scenarios.Scenario("s", None, "ctr", expect="rc=0 out=hello")
    return harness.run_scenario(None, harness.runtimes("/bin/true"), scn), calls


def test_a_reference_that_lost_the_output_gets_a_second_try(harness, monkeypatch):
    res, calls = run(harness, monkeypatch, {"pyruntime": ["rc=0 out=hello"],
                                            "runc": ["rc=0 out=", "rc=0 out=hello"]})
    assert res["passed"] and sorted(calls) == ["pyruntime", "runc", "runc"]
    assert "runc's first try gave 'rc=0 out='" in res["why"]


def test_pyruntime_missing_the_output_fails_without_a_retry(harness, monkeypatch):
    res, calls = run(harness, monkeypatch, {"pyruntime": ["rc=0 out="],
                                            "runc": ["rc=0 out=hello"]})
    assert not res["passed"] and sorted(calls) == ["pyruntime", "runc"]
    assert res["why"] == "pyruntime differs from runc"


def test_a_reference_that_misses_twice_fails(harness, monkeypatch):
    res, _ = run(harness, monkeypatch, {"pyruntime": ["rc=0 out=hello"],
                                        "runc": ["rc=0 out=", "rc=0 out="]})
    assert not res["passed"] and res["why"].endswith("pyruntime differs from runc")
