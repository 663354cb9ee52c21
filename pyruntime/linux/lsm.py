"""AppArmor and SELinux: apply the config's labels where the host has the LSM.

Where it has not, behave as runc: an AppArmor profile is an error (running unconfined when the
config asks for confinement is unsafe), SELinux labels are ignored (go-selinux does nothing on a
host without SELinux). Labels take effect at the process's execve, so they are written last.
"""
from __future__ import annotations

import os

from pyruntime.errors import ConfigError, RuntimeFailure


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def check_apparmor(profile: str | None) -> None:
    """runc refuses too: running without the confinement the config asks for is unsafe."""
    if profile and not apparmor_enabled():
        raise ConfigError("process.apparmorProfile", profile,
                          "cannot be applied: AppArmor is not enabled on this host")


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def set_exec_labels(apparmor_profile: str, selinux_label: str, proc: str = "/proc") -> None:
    """Ask the LSMs to switch the process's label at its next execve (in the container, after
    pivot_root: `proc` is the container's procfs)."""
    if apparmor_profile:
        _write_first([f"{proc}/thread-self/attr/apparmor/exec", f"{proc}/thread-self/attr/exec"],
                     f"exec {apparmor_profile}", "process.apparmorProfile", apparmor_profile)
    if selinux_label and selinux_enabled():
        _write_first([f"{proc}/thread-self/attr/exec"], selinux_label, "process.selinuxLabel",
                     selinux_label)


def mount_context(mount_label: str) -> str | None:
    """The mount option that labels a new filesystem, where SELinux is on."""
    if mount_label and selinux_enabled():
        return f'context="{mount_label}"'
    return None


def _write_first(paths: list[str], value: str, field: str, shown: str) -> None:
    err = None
    for path in paths:
        try:
            with open(path, "w") as f:
                f.write(value)
            return
        except FileNotFoundError as e:
            err = e
        except OSError as e:
            raise RuntimeFailure(f"{field}: {shown!r}: cannot be applied: {e.strerror}",
                                 errno=e.errno) from None
    raise RuntimeFailure(f"{field}: {shown!r}: cannot be applied: {err.strerror if err else 'no procfs'}"
                         " (is /proc mounted in the container?)")
