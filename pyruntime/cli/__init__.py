"""The command line in runc's shape: the entry point, option parsing, one module per command."""
