"""run a demo container from a built-in busybox bundle"""
import json
import os
import shutil
import subprocess
import tempfile

from pyruntime.oci.defaults import default_spec
from pyruntime.errors import RuntimeFailure

SCRIPT = ("echo \"hello from $(hostname), PID $$ in its own pid namespace\"; "
          "echo 'processes:'; ps; echo 'mounts:'; cut -d' ' -f2,3 /proc/mounts | head -8; "
          "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status")


def configure(p):
    p.add_argument("--busybox", default=shutil.which("busybox") or "/bin/busybox",
                   help="a static busybox (Debian's busybox-static)")
    p.add_argument("command", nargs="*", help="what to run (default: a short tour)")


def main(opts, ctx):
    if not os.path.exists(opts.busybox):
        raise RuntimeFailure(f"{opts.busybox} not found: apt-get install busybox-static")
    from pyruntime.lifecycle import container
    import prctl
    with tempfile.TemporaryDirectory(prefix="pyruntime-demo-") as bundle:
        rootfs = os.path.join(bundle, "rootfs")
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
            os.makedirs(os.path.join(rootfs, d))
        shutil.copy2(opts.busybox, os.path.join(rootfs, "bin", "busybox"))
        applets = subprocess.run([opts.busybox, "--list"], capture_output=True, text=True).stdout
        for a in applets.split():
            if a != "busybox":
                os.symlink("busybox", os.path.join(rootfs, "bin", a))
        with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        spec = default_spec(args=opts.command or ["sh", "-c", SCRIPT], terminal=False)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        cid = f"demo-{os.getpid()}"
        prctl.set_child_subreaper(True)
        c = container.create(ctx.root, cid, bundle)
        try:
            container.start(ctx.root, cid)
            _, status = os.waitpid(c.state.pid, 0)
        finally:
            container.delete(ctx.root, cid, force=True)
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
