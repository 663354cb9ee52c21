"""The container side: the bootstrap and init, the rootfs, the process, the sealed execve."""
