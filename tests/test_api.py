"""The Python API's typed errors."""
from __future__ import annotations

from pyruntime.errors import (ContainerExists, ContainerNotFound, ContainerNotRunning,
                              ContainerStateError, RuntimeFailure)


def test_typed_errors_keep_runcs_wording():
    """containerd and Docker match these words: the classes change what Python code can
    catch, never what the CLI prints."""
    assert str(ContainerNotFound("a")) == "container does not exist: a"
    assert str(ContainerExists("a")) == "container with given ID already exists: a"
    e = ContainerNotRunning("a")
    assert (str(e), e.id, e.status) == ("container not running", "a", "stopped")
    assert isinstance(e, ContainerStateError) and isinstance(e, RuntimeFailure)
    e = ContainerStateError("a", "paused", "container paused")
    assert (str(e), e.status) == ("container paused", "paused")
