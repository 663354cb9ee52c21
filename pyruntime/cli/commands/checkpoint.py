"""checkpoint a running container (CRIU)"""


def criu_options(p, image_path_help: str) -> None:
    """The CRIU options `checkpoint` and `restore` share (runc's names)."""
    p.add_argument("--image-path", help=image_path_help)
    p.add_argument("--work-path", help="path for saving work files and logs")
    p.add_argument("--tcp-established", action="store_true", help="allow open tcp connections")
    p.add_argument("--ext-unix-sk", action="store_true", help="allow external unix sockets")
    p.add_argument("--shell-job", action="store_true", help="allow shell jobs")
    p.add_argument("--file-locks", action="store_true", help="handle file locks, for safety")
    p.add_argument("--lazy-pages", action="store_true", help="use userfaultfd to lazily restore memory")
    p.add_argument("--manage-cgroups-mode", help="cgroups mode: soft|full|strict|ignore (default: soft)")
    p.add_argument("--empty-ns", action="append", default=[], help="create a namespace, but don't restore its properties")
    p.add_argument("--auto-dedup", action="store_true", help="enable auto deduplication of memory images")


def configure(p):
    criu_options(p, "path for saving criu image files (default: ./checkpoint)")
    p.add_argument("--parent-path", help="path for previous criu image files in pre-dump")
    p.add_argument("--leave-running", action="store_true", help="leave the process running")
    p.add_argument("--status-fd", type=int, default=-1, help="criu writes \\0 here once lazy-pages is ready")
    p.add_argument("--page-server", help="ADDRESS:PORT of the page server")
    p.add_argument("--pre-dump", action="store_true", help="dump memory only, leave the container running")
    p.add_argument("container_id")


def main(opts, ctx):
    from pyruntime.criu.dump import checkpoint
    checkpoint(ctx.root, opts.container_id, opts, getattr(ctx, "criu", None))
    return 0
