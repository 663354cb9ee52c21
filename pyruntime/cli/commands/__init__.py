"""One module per CLI command: configure(parser) adds its flags, main(opts, ctx) runs it."""
