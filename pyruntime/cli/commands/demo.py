"""run a demo container from a built-in busybox bundle"""
import os
import shutil

SCRIPT = ("echo \"hello from $(hostname), PID $$ in its own pid namespace\"; "
          "echo 'processes:'; ps; echo 'mounts:'; cut -d' ' -f2,3 /proc/mounts | head -8; "
          "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status")


def configure(p):
    p.add_argument("--busybox", default=shutil.which("busybox") or "/bin/busybox",
                   help="a static busybox (Debian's busybox-static)")
    p.add_argument("command", nargs="*", help="what to run (default: a short tour)")


def main(opts, ctx):
    import tempfile
    from pyruntime.cli.commands import runtime
    from pyruntime.oci.defaults import busybox_bundle
    with tempfile.TemporaryDirectory(prefix="pyruntime-demo-") as tmp:
        bundle = busybox_bundle(os.path.join(tmp, "bundle"), opts.command or ["sh", "-c", SCRIPT],
                                busybox=opts.busybox)
        return runtime(ctx, subreaper=True).run(f"demo-{os.getpid()}", bundle).exit_code
