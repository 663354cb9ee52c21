"""The kernel interfaces: the syscall layer, namespaces, capabilities, console, LSMs, devices."""
