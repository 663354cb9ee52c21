"""Seccomp profiles into BPF programs without loading them (no root, no fork): libseccomp
through ctypes, runc's -ENOSYS stub, the on-disk cache of programs, and check()'s errors.
tests/test_seccomp.py loads the programs for real in forked children."""
from __future__ import annotations

import copy
import errno
import json
import struct
from pathlib import Path

import pytest

from pyruntime.errors import ConfigError
from pyruntime.seccomp import compile as seccomp, kernel, profile

REPO = Path(__file__).resolve().parents[2]
DOCKER_PROFILE = REPO / "tests" / "seccomp" / "docker-default.json"
RET_K = 0x06  # BPF_RET | BPF_K


def allow_all_but(*rules, **extra) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules), **extra}


def insns(bpf: bytes) -> list[tuple[int, int, int, int]]:
    """struct sock_filter entries: (code, jt, jf, k)."""
    return [struct.unpack_from("=HBBI", bpf, i) for i in range(0, len(bpf), 8)]


def returns(bpf: bytes) -> set[int]:
    return {k for code, _, _, k in insns(bpf) if code == RET_K}


def test_docker_default_profile_compiles_to_a_program():
    prof = json.loads(DOCKER_PROFILE.read_text())
    prog = seccomp.compile(prof)
    assert len(prog.bpf) % 8 == 0 and 100 < len(prog) <= 4096  # BPF_MAXINSNS
    assert prog.flags == kernel.FLAG_SPEC_ALLOW and not prog.notify
    assert prog.bpf == seccomp.compile(prof).bpf  # the same profile, the same program
    rets = returns(prog.bpf)
    assert profile.ACT_ALLOW in rets
    assert profile.ACT_ERRNO | errno.EPERM in rets  # defaultAction with defaultErrnoRet 1
    # runc's stub comes first: it loads the arch, and syscalls newer than the profile get ENOSYS
    stub = seccomp._enosys_stub(prof, prof["defaultAction"])
    assert stub and prog.bpf.startswith(stub)
    assert insns(stub)[0] == (0x20, 0, 0, 4)  # A = seccomp_data.arch
    assert profile.ACT_ERRNO | errno.ENOSYS in returns(stub)
    # without architectures there is no stub (as runc)
    bare = {k: v for k, v in prof.items() if k != "architectures"}
    assert seccomp._enosys_stub(bare, bare["defaultAction"]) == b""
    assert len(seccomp.compile(bare)) < len(prog)


def test_errno_and_notify_programs():
    prog = seccomp.compile(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                          "errnoRet": 42}))
    # (and libseccomp's kill for a foreign architecture)
    assert returns(prog.bpf) == {profile.ACT_ALLOW, profile.ACT_ERRNO | 42, profile.ACT_KILL_THREAD}
    notify = seccomp.compile(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"},
                                           listenerPath="/run/agent.sock"))
    assert notify.notify and notify.flags & kernel.FLAG_NEW_LISTENER
    assert profile.ACT_NOTIFY in returns(notify.bpf)


def test_libseccomp_constants_match_the_library():
    """Values hard-coded in the module, checked against libseccomp 2.5.x itself."""
    assert seccomp.libseccomp_version().startswith("2.")
    lib = seccomp._lib()
    expected = {"SCMP_ARCH_X86": 0x40000003, "SCMP_ARCH_X86_64": 0xC000003E,
                "SCMP_ARCH_X32": 0x4000003E, "SCMP_ARCH_AARCH64": 0xC00000B7,
                "SCMP_ARCH_ARM": 0x40000028, "SCMP_ARCH_S390X": 0x80000016,
                "SCMP_ARCH_RISCV64": 0xC00000F3, "SCMP_ARCH_PPC64LE": 0xC0000015}
    for oci, tok in expected.items():
        assert lib.seccomp_arch_resolve_name(profile.ARCHES[oci].encode()) == tok, oci
    for oci, name in profile.ARCHES.items():
        if oci != "SCMP_ARCH_LOONGARCH64":
            assert lib.seccomp_arch_resolve_name(name.encode()) != 0, oci
    # attributes 1..9 exist in 2.5.x, 10 (CTL_WAITKILL) only from 2.6
    ctx = lib.seccomp_init(profile.ACT_ALLOW)
    try:
        assert lib.seccomp_attr_set(ctx, seccomp._FLTATR_CTL_NNP, 0) == 0
        assert lib.seccomp_attr_set(ctx, seccomp._FLTATR_CTL_OPTIMIZE, 2) == 0
        if seccomp.libseccomp_version().startswith("2.5."):
            assert lib.seccomp_attr_set(ctx, 10, 1) == -errno.EINVAL
    finally:
        lib.seccomp_release(ctx)
    assert seccomp.resolve_syscall("no_such_syscall") is None
    assert seccomp.resolve_syscall("getppid") == 110  # x86_64
    assert seccomp.resolve_syscall("read", "SCMP_ARCH_X32") == 0x40000000


def test_import_is_cheap():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, pyruntime.seccomp.compile, pyruntime.seccomp.notify; "
                          "print('ctypes' in sys.modules)"],
                         capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    assert out == "False"


def test_disabled_without_default_action_and_syscalls():
    assert seccomp.compile({}) is None
    assert seccomp.compile({"architectures": ["SCMP_ARCH_X86_64"]}) is None
    profile.check({})
    assert kernel.install(None) is None


def test_cache_reuses_the_program_it_wrote(tmp_path):
    prof = json.loads(DOCKER_PROFILE.read_text())
    first = seccomp.compile(prof, cache_dir=str(tmp_path))
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".bpf"
    assert files[0].read_bytes() == first.bpf == seccomp.compile(prof).bpf
    assert files[0].stat().st_mode & 0o777 == 0o600
    # a hit never builds: mark the file and the mark comes back
    marked = first.bpf[:-8] + struct.pack("<HBBI", 6, 0, 0, 0x7FFF0000)
    files[0].write_bytes(marked)
    again = seccomp.compile(prof, cache_dir=str(tmp_path))
    assert again.bpf == marked and (again.flags, again.notify) == (first.flags, first.notify)


def test_cache_key_covers_the_library_file(tmp_path, monkeypatch):
    assert "/libseccomp.so" in seccomp._library_identity()  # the loaded file, not just 2.5.4
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3})
    seccomp.compile(prof, cache_dir=str(tmp_path))
    monkeypatch.setattr(seccomp, "_library_identity", lambda: "2.5.4:/elsewhere:1:2:3")
    seccomp.compile(prof, cache_dir=str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 2


def test_cache_ignores_a_damaged_file_and_rewrites_it(tmp_path):
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3})
    good = seccomp.compile(prof, cache_dir=str(tmp_path))
    (f,) = tmp_path.iterdir()
    f.write_bytes(good.bpf[:-3])  # not whole instructions
    assert seccomp.compile(prof, cache_dir=str(tmp_path)).bpf == good.bpf
    assert f.read_bytes() == good.bpf


def test_cache_is_bounded_and_unwritable_is_harmless(tmp_path, monkeypatch):
    monkeypatch.setattr(seccomp, "CACHE_MAX", 3)
    for n in range(5):
        seccomp.compile(allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                       "errnoRet": n + 1}), cache_dir=str(tmp_path))
        assert len(list(tmp_path.iterdir())) <= 3
    blocker = tmp_path / "file"
    blocker.write_text("")
    prof = allow_all_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9})
    assert seccomp.compile(prof, cache_dir=str(blocker / "sub")).bpf == seccomp.compile(prof).bpf


def test_kernel_flag_probe():
    assert kernel.kernel_supports_flags(kernel.FLAG_LOG)
    assert not kernel.kernel_supports_flags(1 << 20)


BASE = {"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]}


def _with(path: str, value):
    cfg = copy.deepcopy(BASE)
    cur, keys = cfg, path.split(".")
    for k in keys[:-1]:
        cur = cur[int(k)] if k.isdigit() else cur[k]
    last = keys[-1]
    if last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return cfg


BAD = [
    ("defaultAction", "SCMP_ACT_FOO", "linux.seccomp.defaultAction", "is not a seccomp action"),
    ("defaultAction", "SCMP_ACT_NOTIFY", "linux.seccomp.defaultAction", "cannot be the default"),
    ("defaultErrnoRet", 5, "linux.seccomp.defaultErrnoRet", "is not allowed with defaultAction"),
    ("defaultErrnoRet", -1, "linux.seccomp.defaultErrnoRet", "is not an errno"),
    ("architectures", ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"], "linux.seccomp.architectures[1]",
     "is not a seccomp architecture"),
    ("flags", ["SECCOMP_FILTER_FLAG_BOGUS"], "linux.seccomp.flags[0]", "is not a seccomp flag"),
    ("listenerMetadata", "x", "linux.seccomp.listenerMetadata", "without listenerPath"),
    ("listenerPath", "/" + "x" * 120, "linux.seccomp.listenerPath", "too long"),
    ("syscalls.0.action", "SCMP_ACT_FOO", "linux.seccomp.syscalls[0].action",
     "is not a seccomp action"),
    ("syscalls.0.names", [], "linux.seccomp.syscalls[0].names", "at least one"),
    ("syscalls.0.names", ["getppid", ""], "linux.seccomp.syscalls[0].names[1]",
     "is not a syscall name"),
    ("syscalls.0.errnoRet", 70000, "linux.seccomp.syscalls[0].errnoRet", "is not an errno"),
    ("syscalls.0.args", [{"index": 0, "value": 1, "op": "SCMP_CMP_FOO"}],
     "linux.seccomp.syscalls[0].args[0].op", "is not a seccomp operator"),
    ("syscalls.0.args", [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
     "linux.seccomp.syscalls[0].args[0].index", "0-5"),
    ("syscalls.0.args", [{"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}],
     "linux.seccomp.syscalls[0].args[0].value", "uint64"),
    ("syscalls.0.args", [{"index": 0, "value": 1, "valueTwo": -2, "op": "SCMP_CMP_MASKED_EQ"}],
     "linux.seccomp.syscalls[0].args[0].valueTwo", "uint64"),
    ("syscalls.0.args", [{"index": 0, "op": "SCMP_CMP_EQ"}],
     "linux.seccomp.syscalls[0].args[0].value", "uint64"),
    ("syscalls.0", {"names": ["getppid"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1},
     "linux.seccomp.syscalls[0].errnoRet", "is not allowed with action SCMP_ACT_ALLOW"),
    ("syscalls.0", {"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"},
     "linux.seccomp.listenerPath", "is required when a rule uses SCMP_ACT_NOTIFY"),
    ("syscalls.0", {"names": ["read", "write"], "action": "SCMP_ACT_NOTIFY"},
     "linux.seccomp.syscalls[0].names[1]",
     "SCMP_ACT_NOTIFY cannot be used for the write syscall"),  # runc's words
]


@pytest.mark.parametrize("key,value,path,problem", BAD, ids=[f"{b[2]}:{b[3]}" for b in BAD])
def test_check_rejects(key, value, path, problem):
    cfg = _with(key, value)
    if "NOTIFY" in problem and "write" in problem:
        cfg["listenerPath"] = "/run/agent.sock"
    with pytest.raises(ConfigError) as ei:
        profile.check(cfg)
    assert ei.value.path == path
    assert problem in ei.value.problem
    assert str(ei.value).startswith(f"config.json: {path}: ")
    with pytest.raises(ConfigError):  # compile() validates too
        seccomp.compile(cfg)


def test_check_accepts_spec_example_and_docker_profile():
    profile.check({"defaultAction": "SCMP_ACT_ALLOW",
                   "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                   "syscalls": [{"names": ["getcwd", "chmod"], "action": "SCMP_ACT_ERRNO"}]})
    profile.check(json.loads(DOCKER_PROFILE.read_text()))
    profile.check(None)
    profile.check({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38})
    profile.check({"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 1,
                   "flags": list(kernel.FLAGS)})


def test_check_rejects_a_non_object():
    with pytest.raises(ConfigError) as ei:
        profile.check(["SCMP_ACT_ALLOW"])
    assert ei.value.path == "linux.seccomp"


def test_arch_unknown_to_libseccomp():
    if seccomp._lib().seccomp_arch_resolve_name(b"loongarch64"):
        pytest.skip("this libseccomp knows loongarch64")
    cfg = dict(BASE, architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_LOONGARCH64"])
    with pytest.raises(ConfigError) as ei:
        seccomp.compile(cfg)
    assert ei.value.path == "linux.seccomp.architectures[1]"
    assert "not supported by libseccomp" in ei.value.problem
