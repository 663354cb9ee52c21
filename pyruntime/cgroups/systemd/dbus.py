"""A blocking client of systemd's Manager over D-Bus: the system bus if a bus daemon is there,
else systemd's private socket; in rootless mode the user's systemd (user@UID.service), reached
through $DBUS_SESSION_BUS_ADDRESS or, without it, $XDG_RUNTIME_DIR/systemd/private.

jeepney (pure-Python D-Bus) is imported only here, and only when a bus is needed.
"""
from __future__ import annotations

import os
import select
import socket
import sys
import time

from pyruntime.errors import RuntimeFailure

SYSTEM_BUS = "/run/dbus/system_bus_socket"
PRIVATE_SOCKET = "/run/systemd/private"
JOB_TIMEOUT = 30.0  # runc's

_DEST = "org.freedesktop.systemd1"
_PATH = "/org/freedesktop/systemd1"
_MANAGER = "org.freedesktop.systemd1.Manager"


def _jeepney():
    try:
        import jeepney  # only --systemd-cgroup pays for it
    except ImportError:
        raise RuntimeFailure("systemd cgroup driver: the jeepney package is not installed "
                             f"for {sys.executable} (pip install jeepney)") from None
    return jeepney


class DBusError(RuntimeFailure):
    def __init__(self, name: str, text: str):
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name


def user_addresses(env) -> list[tuple[str, str]]:
    """Where the user's systemd is, as (address, "bus" | "private"): the session bus when
    $DBUS_SESSION_BUS_ADDRESS names one, else the user manager's private socket under
    $XDG_RUNTIME_DIR, as runc finds it in rootless mode."""
    bus = env.get("DBUS_SESSION_BUS_ADDRESS")
    xdg = env.get("XDG_RUNTIME_DIR")
    # The private socket also stands behind a bus that the manager has not joined yet.
    private = [(os.path.join(xdg, "systemd", "private"), "private")] if xdg else []
    if bus:
        from jeepney.bus import get_connectable_addresses
        try:
            return [(a, "bus") for a in get_connectable_addresses(bus)] + private
        except (RuntimeError, ValueError):
            raise RuntimeFailure(f"systemd cgroup driver: DBUS_SESSION_BUS_ADDRESS={bus!r} is "
                                 "not a unix address") from None
    if private:
        return private
    raise RuntimeFailure("systemd cgroup driver: rootless mode needs the user's systemd, and "
                         "neither $DBUS_SESSION_BUS_ADDRESS nor $XDG_RUNTIME_DIR (for "
                         "$XDG_RUNTIME_DIR/systemd/private) is set")


class Systemd:
    """A blocking client of systemd's Manager: the system bus if a bus daemon is there, else
    systemd's private socket (a direct connection: no bus, no Hello, no AddMatch).
    user=True: the caller's own user manager (rootless mode)."""

    def __init__(self, timeout: float = JOB_TIMEOUT, user: bool = False):
        self.j = _jeepney()
        self.timeout = timeout
        self.user = user
        self._jobs: dict[str, str] = {}   # job path -> result, from JobRemoved
        self._version: int | None = None
        self.manager = self.j.DBusAddress(_PATH, bus_name=_DEST, interface=_MANAGER)
        tried = []
        for addr, via in self._addresses(tried):
            self._serial = 0
            self.parser = self.j.Parser()
            self.via, self.addr = via, addr
            try:
                self.sock = self._open(addr)
            except (OSError, ValueError) as e:
                tried.append(f"{addr.lstrip(chr(0))}: {getattr(e, 'strerror', None) or e}")
                continue
            try:
                self._setup()
                return
            except RuntimeFailure as e:
                # e.g. a bus that systemd has not joined yet (dbus.service just started)
                self.sock.close()
                tried.append(f"{addr.lstrip(chr(0))}: {e}")
        detail = f" ({'; '.join(tried)})" if tried else ""
        if user:
            raise RuntimeFailure(f"systemd cgroup driver: cannot reach the user's systemd"
                                 f"{detail}")
        raise RuntimeFailure("systemd cgroup driver: cannot reach systemd (no "
                             f"{SYSTEM_BUS} or {PRIVATE_SOCKET}){detail}")

    # ------------------------------------------------------------ connection

    def _addresses(self, tried: list) -> list:
        if self.user:
            return user_addresses(os.environ)
        env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        bus_addrs = [SYSTEM_BUS]
        if env:
            try:
                from jeepney.bus import get_connectable_addresses
                bus_addrs = list(get_connectable_addresses(env))
            except (RuntimeError, ValueError):
                tried.append(f"DBUS_SYSTEM_BUS_ADDRESS={env!r}: not a unix address")
                bus_addrs = []
        return [(a, via) for a, via in [(a, "bus") for a in bus_addrs]
                + [(PRIVATE_SOCKET, "private")] if a.startswith("\0") or os.path.exists(a)]

    def _setup(self) -> None:
        if self.via == "bus":
            bus = self.j.DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                                     interface="org.freedesktop.DBus")
            self._call(bus, "Hello", "", ())
            rule = (f"type='signal',sender='{_DEST}',interface='{_MANAGER}',"
                    "member='JobRemoved'")
            self._call(bus, "AddMatch", "s", (rule,))
        else:
            self._settle()
        # systemd sends JobRemoved only to subscribed clients.
        self.call("Subscribe", "", ())

    def _open(self, addr: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(5.0)
            sock.connect(addr)
            sock.sendall(b"\0")
            from pyruntime.lifecycle.rootless import in_foreign_userns
            if self.user and in_foreign_userns():
                self._auth_as_peer(sock)
                return sock
            auth = self.j.auth.Authenticator(inc_null_byte=False)
            for line in auth:
                sock.sendall(line)
                data = sock.recv(1024)
                if not data:
                    raise ConnectionResetError(104, "connection closed during authentication")
                auth.feed(data)
            sock.sendall(self.j.auth.BEGIN)
            sock.settimeout(None)
            return sock
        except BaseException:
            sock.close()
            raise

    def _auth_as_peer(self, sock: socket.socket) -> None:
        """EXTERNAL without an identity: in a user namespace (rootless podman's) our euid is
        not the uid the bus sees through SO_PEERCRED, so let it take that one."""
        def line() -> bytes:
            buf = b""
            while not buf.endswith(b"\r\n"):
                data = sock.recv(1)
                if not data:
                    raise ConnectionResetError(104, "connection closed during authentication")
                buf += data
            return buf
        sock.sendall(b"AUTH EXTERNAL\r\n")
        reply = line()
        if reply.startswith(b"DATA"):  # dbus-daemon asks for the (empty) identity
            sock.sendall(b"DATA\r\n")
            reply = line()
        if not reply.startswith(b"OK "):
            raise ConnectionRefusedError(111, "authentication refused: "
                                         + reply.decode(errors="replace").strip())
        sock.sendall(b"BEGIN\r\n")
        sock.settimeout(None)

    def _settle(self) -> None:
        """Ping until systemd answers. On its private socket (sd-bus, v252 at least) a message
        read together with BEGIN stays unprocessed until more data arrives: each new ping
        pushes the one before through."""
        peer = self.j.DBusAddress(_PATH, bus_name=_DEST, interface="org.freedesktop.DBus.Peer")
        H = self.j.HeaderFields
        sent: set[int] = set()
        deadline = time.monotonic() + self.timeout
        while True:
            sent.add(self._send(self.j.new_method_call(peer, "Ping")))
            wait = min(time.monotonic() + 0.05, deadline)
            try:
                while True:
                    msg = self._next(wait)
                    if msg.header.message_type == self.j.MessageType.signal:
                        self._note_signal(msg)
                    elif msg.header.fields.get(H.reply_serial) in sent:
                        return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise RuntimeFailure("systemd cgroup driver: systemd does not answer on "
                                         f"{self.addr}") from None

    def close(self) -> None:
        self.sock.close()

    # ------------------------------------------------------------ messages

    def _send(self, msg) -> int:
        self._serial += 1
        self.sock.sendall(msg.serialise(serial=self._serial))
        return self._serial

    def _next(self, deadline: float):
        while True:
            msg = self.parser.get_next_message()
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeFailure("systemd cgroup driver: systemd closed the connection")
            self.parser.add_data(data)

    def _note_signal(self, msg) -> None:
        f = msg.header.fields
        H = self.j.HeaderFields
        if f.get(H.member) == "JobRemoved" and f.get(H.interface) == _MANAGER:
            _id, job, _unit, result = msg.body
            self._jobs[job] = result

    def _call(self, addr, method: str, sig: str, body: tuple, timeout: float | None = None):
        serial = self._send(self.j.new_method_call(addr, method, sig, body))
        deadline = time.monotonic() + (timeout or self.timeout)
        H, T = self.j.HeaderFields, self.j.MessageType
        while True:
            try:
                msg = self._next(deadline)
            except TimeoutError:
                raise RuntimeFailure(f"systemd cgroup driver: no answer to {method} in "
                                     f"{timeout or self.timeout:g}s") from None
            kind = msg.header.message_type
            if kind == T.signal:
                self._note_signal(msg)
            elif msg.header.fields.get(H.reply_serial) == serial:
                if kind == T.error:
                    text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                    raise DBusError(msg.header.fields.get(H.error_name, "error"), text)
                return msg.body

    def call(self, method: str, sig: str = "", body: tuple = ()):
        return self._call(self.manager, method, sig, body)

    def wait_job(self, job: str, what: str) -> str:
        deadline = time.monotonic() + self.timeout
        while job not in self._jobs:
            try:
                msg = self._next(deadline)
            except TimeoutError:
                raise RuntimeFailure(f"systemd cgroup driver: timed out waiting for systemd to "
                                     f"{what}") from None
            if msg.header.message_type == self.j.MessageType.signal:
                self._note_signal(msg)
        return self._jobs.pop(job)

    # ------------------------------------------------------------ the Manager API

    def version(self) -> int:
        if self._version is None:
            try:
                v = self.get_property(_PATH, _MANAGER, "Version")
                digits = ""
                for ch in str(v).lstrip('"v'):
                    if not ch.isdigit():
                        break
                    digits += ch
                self._version = int(digits) if digits else 0
            except (RuntimeFailure, ValueError):
                self._version = 0
        return self._version

    def get_property(self, path: str, iface: str, name: str):
        addr = self.j.DBusAddress(path, bus_name=_DEST,
                                  interface="org.freedesktop.DBus.Properties")
        (sig, value), = self._call(addr, "Get", "ss", (iface, name))
        return value

    def unit_path(self, unit: str) -> str | None:
        try:
            return self.call("GetUnit", "s", (unit,))[0]
        except DBusError as e:
            if e.name.endswith(".NoSuchUnit"):
                return None
            raise

    def start_transient_unit(self, unit: str, props: list) -> str:
        """Start the unit; return its job, for wait_started()."""
        for retry in (True, False):
            try:
                job = self.call("StartTransientUnit", "ssa(sv)a(sa(sv))",
                                (unit, "replace", props, []))[0]
                break
            except DBusError as e:
                if not e.name.endswith(".UnitExists") or not retry:
                    raise RuntimeFailure(f"systemd cgroup driver: starting {unit}: {e}") from None
                # Perhaps a failed leftover: once reset, systemd drops it (runc retries once).
                self.reset_failed(unit)
        return job

    def wait_started(self, unit: str, job: str) -> None:
        result = self.wait_job(job, f"start {unit}")
        if result != "done":
            self.reset_failed(unit)
            raise RuntimeFailure(f"systemd cgroup driver: starting {unit}: the job ended "
                                 f"{result!r}")

    def stop_unit(self, unit: str) -> None:
        try:
            job = self.call("StopUnit", "ss", (unit, "replace"))[0]
        except DBusError as e:
            if not e.name.endswith(".NoSuchUnit"):
                raise RuntimeFailure(f"systemd cgroup driver: stopping {unit}: {e}") from None
        else:
            self.wait_job(job, f"stop {unit}")
        self.reset_failed(unit)  # a failed unit would otherwise stay loaded

    def reset_failed(self, unit: str) -> None:
        try:
            self.call("ResetFailedUnit", "s", (unit,))
        except DBusError:
            pass

    def set_unit_properties(self, unit: str, props: list) -> None:
        try:
            self.call("SetUnitProperties", "sba(sv)", (unit, True, props))
        except DBusError as e:
            raise RuntimeFailure(f"systemd cgroup driver: setting properties of {unit}: "
                                 f"{e}") from None

    def attach_processes(self, unit: str, pids: list) -> None:
        try:
            self.call("AttachProcessesToUnit", "ssau", (unit, "", pids))
        except DBusError as e:
            raise RuntimeFailure(f"systemd cgroup driver: attaching {pids} to {unit}: "
                                 f"{e}") from None
