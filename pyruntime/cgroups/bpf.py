"""cgroup v2 device rules: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.

cgroup v2 has no devices.allow/deny: the kernel asks a BPF program attached to the cgroup.
We assemble it ourselves (a dozen instruction kinds) and load/attach it with bpf(2) via ctypes.
Imported only on v2 hosts when device rules are set.

The program sees struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } where
access_type = access << 16 | type (type: 1 block, 2 char; access bits: 1 mknod, 2 read, 4 write).

Rule semantics follow the v1 devices cgroup: rules apply in order, a type "a" rule resets the
default (allow or deny all) and forgets earlier rules; later rules override earlier ones. So the
program checks the rules after the last "a" rule from the last to the first; the first match
decides; else the default.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from pyruntime.errors import RuntimeFailure

BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 8, 9
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_QUERY = 13, 15, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_TYPE = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}

# ---------------------------------------------------------------- a tiny assembler

R0, R1, R2, R3, R4, R5 = range(6)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def ldx_w(dst, src, off):      # dst = *(u32 *)(src + off)
    return _insn(0x61, dst, src, off)


def and32(dst, imm):           # wdst &= imm
    return _insn(0x54, dst, imm=imm)


def rsh32(dst, imm):           # wdst >>= imm
    return _insn(0x74, dst, imm=imm)


def mov_reg(dst, src):         # dst = src
    return _insn(0xbf, dst, src)


def mov_imm(dst, imm):         # dst = imm
    return _insn(0xb7, dst, imm=imm)


def jne(dst, imm, off):        # if dst != imm goto +off
    return ("jne", dst, imm, off)


def jeq(dst, imm, off):        # if dst == imm goto +off
    return ("jeq", dst, imm, off)


def exit_():
    return _insn(0x95)


def program(rules) -> bytes:
    """Assemble the device filter for a list of devices.Rule."""
    last_all = max((i for i, r in enumerate(rules) if r.type == "a"), default=-1)
    default = 1 if last_all < 0 else int(rules[last_all].allow)
    code = [ldx_w(R2, R1, 0), and32(R2, 0xFFFF),   # r2 = device type
            ldx_w(R3, R1, 0), rsh32(R3, 16),       # r3 = requested access
            ldx_w(R4, R1, 4),                      # r4 = major
            ldx_w(R5, R1, 8)]                      # r5 = minor
    for r in reversed(rules[last_all + 1:]):
        acc = sum(_ACCESS[c] for c in r.access)
        block = [jne(R2, _TYPE[r.type], None), mov_reg(R1, R3)]
        if r.allow:   # every requested bit must be allowed
            block += [and32(R1, ~acc & 7), jne(R1, 0, None)]
        else:         # any requested bit denied
            block += [and32(R1, acc), jeq(R1, 0, None)]
        if r.major >= 0:
            block.append(jne(R4, r.major, None))
        if r.minor >= 0:
            block.append(jne(R5, r.minor, None))
        block += [mov_imm(R0, int(r.allow)), exit_()]
        for i, ins in enumerate(block):  # every jump goes to the next block
            if isinstance(ins, tuple):
                op, dst, imm, _ = ins
                block[i] = _insn(0x55 if op == "jne" else 0x15, dst, off=len(block) - i - 1,
                                 imm=imm)
        code += block
    code += [mov_imm(R0, default), exit_()]
    return b"".join(code)


# ---------------------------------------------------------------- bpf(2)

def _bpf(cmd: int, attr: bytes) -> tuple[int, bytes]:
    from pyruntime.linux.syscalls import libc, nr
    try:
        number = nr("bpf")
    except OSError as e:
        raise RuntimeFailure(f"linux.resources.devices: {e.strerror}", errno=e.errno) from e
    buf = ctypes.create_string_buffer(attr, len(attr))
    ret = libc().syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret, buf.raw


def _pad(b: bytes, size: int = 128) -> bytes:
    return b + b"\0" * (size - len(b))


def load(rules) -> int:
    """Load the filter; returns the program fd."""
    insns = program(rules)
    ibuf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"Apache\0")
    log = ctypes.create_string_buffer(65536)
    for level in (0, 1):
        attr = struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                           ctypes.addressof(ibuf), ctypes.addressof(lic), level,
                           len(log) if level else 0, ctypes.addressof(log) if level else 0, 0, 0,
                           b"pyruntime_dev", 0, BPF_CGROUP_DEVICE)
        try:
            return _bpf(BPF_PROG_LOAD, _pad(attr))[0]
        except OSError as e:
            if level:
                why = log.value.decode(errors="replace")[-500:]
                raise RuntimeFailure(f"linux.resources.devices: loading the cgroup v2 device "
                                     f"filter: {e.strerror}: {why}", errno=e.errno) from None
            if e.errno in (errno.EPERM, errno.ENOSYS):
                raise RuntimeFailure(f"linux.resources.devices: cgroup v2 needs a BPF device "
                                     f"filter and bpf(2) failed: {e.strerror}",
                                     errno=e.errno) from None
    raise AssertionError("unreachable")


def prog_id(fd: int) -> int:
    info = ctypes.create_string_buffer(64)
    attr = struct.pack("<IIQ", fd, len(info), ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _pad(attr))
    return struct.unpack_from("<II", info.raw)[1]


def attach_device_rules(cgroup_dir: str, rules) -> dict:
    """Attach the filter (alongside any existing one: the kernel ANDs them, so an update is
    never briefly permissive). Returns what detach() needs, JSON-able."""
    pfd = load(rules)
    try:
        cfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attr = struct.pack("<IIIII", cfd, pfd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0)
            try:
                _bpf(BPF_PROG_ATTACH, _pad(attr))
            except OSError as e:
                raise RuntimeFailure(f"linux.resources.devices: attaching the device filter to "
                                     f"{cgroup_dir}: {e.strerror}", errno=e.errno) from None
        finally:
            os.close(cfd)
        return {"prog_id": prog_id(pfd)}
    finally:
        os.close(pfd)


def detach(cgroup_dir: str, info: dict) -> None:
    """Detach a filter attached by attach_device_rules (best effort: gone is fine)."""
    try:
        pfd = _bpf(BPF_PROG_GET_FD_BY_ID, _pad(struct.pack("<III", info["prog_id"], 0, 0)))[0]
    except (OSError, KeyError):
        return
    try:
        cfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.close(pfd)
        return
    try:
        _bpf(BPF_PROG_DETACH, _pad(struct.pack("<IIII", cfd, pfd, BPF_CGROUP_DEVICE, 0)))
    except OSError:
        pass
    finally:
        os.close(cfd)
        os.close(pfd)


def attached_ids(cgroup_dir: str) -> list[int]:
    """Ids of the device programs attached to a cgroup (BPF_PROG_QUERY)."""
    ids = (ctypes.c_uint32 * 64)()
    cfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = struct.pack("<IIIIQI", cfd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), 64)
        _, out = _bpf(BPF_PROG_QUERY, _pad(attr))
    finally:
        os.close(cfd)
    count = struct.unpack_from("<I", out, 24)[0]
    return list(ids[:count])
