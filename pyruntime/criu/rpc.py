"""CRIU's RPC messages (images/rpc.proto in CRIU's source), built at import from a table.

The message classes come from a descriptor written here with the `protobuf` package, not from
protoc output: generated _pb2 files are tied to the protobuf release that generated them (and
pycriu, which ships them, is unmaintained), while a runtime descriptor works with any protobuf
4.21+. Only the fields pyruntime sends or reads are declared; names, numbers and types are
rpc.proto's, so the wire format is CRIU's, and fields CRIU adds later are carried as unknown.
Only checkpoint and restore import this module.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "int32": _F.TYPE_INT32, "uint32": _F.TYPE_UINT32,
            "bool": _F.TYPE_BOOL}
REQ, REP = "required", "repeated"

ENUMS = {
    "criu_cg_mode": {"IGNORE": 0, "CG_NONE": 1, "PROPS": 2, "SOFT": 3, "FULL": 4, "STRICT": 5,
                     "DEFAULT": 6},
    "criu_req_type": {"EMPTY": 0, "DUMP": 1, "RESTORE": 2, "CHECK": 3, "PRE_DUMP": 4,
                      "PAGE_SERVER": 5, "NOTIFY": 6, "CPUINFO_DUMP": 7, "CPUINFO_CHECK": 8,
                      "FEATURE_CHECK": 9, "VERSION": 10, "WAIT_PID": 11,
                      "PAGE_SERVER_CHLD": 12, "SINGLE_PRE_DUMP": 13},
}

# name: [(field, number, type, label?, default?)]; the label is optional unless given.
MESSAGES = {
    "criu_page_server_info": [("address", 1, "string"), ("port", 2, "int32"), ("pid", 3, "int32"),
                              ("fd", 4, "int32")],
    "ext_mount_map": [("key", 1, "string", REQ), ("val", 2, "string", REQ)],
    "join_namespace": [("ns", 1, "string", REQ), ("ns_file", 2, "string", REQ),
                       ("extra_opt", 3, "string")],
    "inherit_fd": [("key", 1, "string", REQ), ("fd", 2, "int32", REQ)],
    "cgroup_root": [("ctrl", 1, "string"), ("path", 2, "string", REQ)],
    "criu_opts": [
        ("images_dir_fd", 1, "int32", REQ, "-1"), ("pid", 2, "int32"),
        ("leave_running", 3, "bool"), ("ext_unix_sk", 4, "bool"),
        ("tcp_established", 5, "bool"), ("evasive_devices", 6, "bool"),
        ("shell_job", 7, "bool"), ("file_locks", 8, "bool"), ("log_level", 9, "int32", None, "2"),
        ("log_file", 10, "string"), ("ps", 11, "criu_page_server_info"),
        ("notify_scripts", 12, "bool"), ("root", 13, "string"), ("parent_img", 14, "string"),
        ("track_mem", 15, "bool"), ("auto_dedup", 16, "bool"), ("work_dir_fd", 17, "int32"),
        ("ext_mnt", 23, "ext_mount_map", REP), ("manage_cgroups", 24, "bool"),
        ("cg_root", 25, "cgroup_root", REP), ("rst_sibling", 26, "bool"),
        ("inherit_fd", 27, "inherit_fd", REP), ("manage_cgroups_mode", 34, "criu_cg_mode"),
        ("external", 37, "string", REP), ("empty_ns", 38, "uint32"),
        ("join_ns", 39, "join_namespace", REP), ("freeze_cgroup", 44, "string"),
        ("lazy_pages", 48, "bool"), ("status_fd", 49, "int32"),
        ("orphan_pts_master", 50, "bool"), ("config_file", 51, "string"),
        ("lsm_profile", 53, "string"), ("lsm_mount_context", 63, "string"),
    ],
    "criu_dump_resp": [("restored", 1, "bool")],
    "criu_restore_resp": [("pid", 1, "int32", REQ)],
    "criu_notify": [("script", 1, "string"), ("pid", 2, "int32")],
    "criu_features": [("mem_track", 1, "bool"), ("lazy_pages", 2, "bool"),
                      ("pidfd_store", 3, "bool")],
    "criu_version": [("major_number", 1, "int32", REQ), ("minor_number", 2, "int32", REQ),
                     ("gitid", 3, "string"), ("sublevel", 4, "int32"), ("extra", 5, "int32"),
                     ("name", 6, "string")],
    "criu_req": [("type", 1, "criu_req_type", REQ), ("opts", 2, "criu_opts"),
                 ("notify_success", 3, "bool"), ("keep_open", 4, "bool"),
                 ("features", 5, "criu_features"), ("pid", 6, "uint32")],
    "criu_resp": [("type", 1, "criu_req_type", REQ), ("success", 2, "bool", REQ),
                  ("dump", 3, "criu_dump_resp"), ("restore", 4, "criu_restore_resp"),
                  ("notify", 5, "criu_notify"), ("ps", 6, "criu_page_server_info"),
                  ("cr_errno", 7, "int32"), ("features", 8, "criu_features"),
                  ("cr_errmsg", 9, "string"), ("version", 10, "criu_version"),
                  ("status", 11, "int32")],
}

_LABELS = {None: _F.LABEL_OPTIONAL, REQ: _F.LABEL_REQUIRED, REP: _F.LABEL_REPEATED}


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="pyruntime_criu_rpc.proto", syntax="proto2")
    for name, values in ENUMS.items():
        e = f.enum_type.add(name=name)
        for vname, number in values.items():
            e.value.add(name=vname, number=number)
    for name, fields in MESSAGES.items():
        m = f.message_type.add(name=name)
        for fname, number, ftype, *rest in fields:
            label = rest[0] if rest else None
            fd = m.field.add(name=fname, number=number, label=_LABELS[label])
            if ftype in _SCALARS:
                fd.type = _SCALARS[ftype]
            else:
                fd.type = _F.TYPE_ENUM if ftype in ENUMS else _F.TYPE_MESSAGE
                fd.type_name = "." + ftype
            if len(rest) > 1:
                fd.default_value = rest[1]
    return f


def _classes() -> dict:
    pool = descriptor_pool.DescriptorPool()
    fdesc = pool.Add(_file())
    if not hasattr(fdesc, "message_types_by_name"):  # older pools return a proto, not a descriptor
        fdesc = pool.FindFileByName("pyruntime_criu_rpc.proto")
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:  # protobuf < 4.21
        factory = message_factory.MessageFactory(pool)
        get = factory.GetPrototype
    return {name: get(fdesc.message_types_by_name[name]) for name in MESSAGES}


_C = _classes()
Req, Resp, Opts = _C["criu_req"], _C["criu_resp"], _C["criu_opts"]
Features = _C["criu_features"]
REQ_TYPE = ENUMS["criu_req_type"]
REQ_NAME = {v: k for k, v in REQ_TYPE.items()}
CG_MODE = ENUMS["criu_cg_mode"]
