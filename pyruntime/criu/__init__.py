"""checkpoint/restore through CRIU's RPC service (`criu swrk`), as runc and crun drive it:
rpc.py the protobuf messages, swrk.py one conversation, mounts.py the external mounts,
dump.py `checkpoint`, restore.py `restore`. Nothing here is imported by other commands."""
