"""The command line in runc's shape: the entry point, option parsing, one module per command."""


def finish(code) -> None:
    """End a lean path (cli/fast.py, server/client.py): exit with `code`, skipping the
    interpreter's teardown, or, for None, run the full CLI in this process."""
    import posix
    import sys
    if code is None:
        from pyruntime.cli.main import run
        run()
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    posix._exit(code)
