"""Compares our px.api.vizierpb descriptors with those of Pixie's Python client.

Usage: python check_descriptor.py [--self-test] OUR_FILE_DESCRIPTOR_SET.bin

Pixie's descriptors come from the `pxapi` package (its generated *_pb2 modules),
which must be importable. For every message and enum of package px.api.vizierpb,
in both directions, it compares each field's name, number, type, label, type_name,
oneof membership and proto3 `optional`, the map-entry flag of messages, each enum
value, and each service method's input and output types and streaming flags.
Options that do not change the wire (gogoproto's, go_package) are not compared.

Prints every difference and exits 1 if there is any, 0 otherwise. With
--self-test, it first checks that the comparison notices a few deliberate changes
to our descriptors.
"""

import importlib
import pkgutil
import sys

from google.protobuf import descriptor_pb2

PACKAGE = "px.api.vizierpb"
CANDIDATE_MODULES = (
    "pxapi.proto.vizierapi_pb2",
    "src.api.proto.vizierpb.vizierapi_pb2",
)


def pixie_files():
    """Pixie's FileDescriptorProtos of PACKAGE, found in the installed pxapi."""
    modules = []
    for name in CANDIDATE_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass
    if not modules:
        # Walk the pxapi package for any generated module of the package.
        import pxapi

        for info in pkgutil.walk_packages(pxapi.__path__, "pxapi."):
            if info.name.endswith("_pb2"):
                try:
                    modules.append(importlib.import_module(info.name))
                except ImportError:
                    pass
    files = {}
    for module in modules:
        fd = module.DESCRIPTOR
        if fd.package != PACKAGE:
            continue
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[proto.name] = (module.__name__, proto)
    return files


def our_files(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    return {f.name: f for f in fds.file if f.package == PACKAGE}


def collect(files):
    """Flattens files into {full name: proto} maps of messages, enums, services."""
    messages, enums, services = {}, {}, {}
    syntaxes = set()

    def walk_message(prefix, msg):
        name = f"{prefix}.{msg.name}"
        messages[name] = msg
        for nested in msg.nested_type:
            walk_message(name, nested)
        for enum in msg.enum_type:
            enums[f"{name}.{enum.name}"] = enum

    for f in files:
        syntaxes.add(f.syntax or "proto2")
        for msg in f.message_type:
            walk_message(f".{f.package}", msg)
        for enum in f.enum_type:
            enums[f".{f.package}.{enum.name}"] = enum
        for svc in f.service:
            services[f".{f.package}.{svc.name}"] = svc
    return messages, enums, services, syntaxes


LABELS = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Label.items()}
TYPES = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}


def field_facts(msg, field):
    oneof = None
    if field.HasField("oneof_index"):
        oneof = msg.oneof_decl[field.oneof_index].name
    return {
        "name": field.name,
        "type": TYPES[field.type],
        "label": LABELS[field.label],
        "type_name": field.type_name,
        "oneof": oneof,
        "proto3_optional": field.proto3_optional,
    }


def compare(pixie, ours):
    diffs = []
    p_msgs, p_enums, p_svcs, p_syntax = collect(pixie)
    o_msgs, o_enums, o_svcs, o_syntax = collect(ours)

    if p_syntax != o_syntax:
        diffs.append(f"syntax: pixie {sorted(p_syntax)}, ours {sorted(o_syntax)}")

    def both(kind, p, o):
        for name in sorted(set(p) - set(o)):
            diffs.append(f"{kind} {name}: missing from ours")
        for name in sorted(set(o) - set(p)):
            diffs.append(f"{kind} {name}: not in pixie's")
        return sorted(set(p) & set(o))

    for name in both("message", p_msgs, o_msgs):
        pm, om = p_msgs[name], o_msgs[name]
        if pm.options.map_entry != om.options.map_entry:
            diffs.append(
                f"message {name}: map_entry pixie {pm.options.map_entry}, "
                f"ours {om.options.map_entry}"
            )
        pf = {f.number: field_facts(pm, f) for f in pm.field}
        of = {f.number: field_facts(om, f) for f in om.field}
        for number in sorted(set(pf) - set(of)):
            diffs.append(f"message {name}: field #{number} {pf[number]} missing from ours")
        for number in sorted(set(of) - set(pf)):
            diffs.append(f"message {name}: field #{number} {of[number]} not in pixie's")
        for number in sorted(set(pf) & set(of)):
            for key, value in pf[number].items():
                if of[number][key] != value:
                    diffs.append(
                        f"message {name}: field #{number} {pf[number]['name']}: "
                        f"{key} pixie {value!r}, ours {of[number][key]!r}"
                    )

    for name in both("enum", p_enums, o_enums):
        pv = {v.name: v.number for v in p_enums[name].value}
        ov = {v.name: v.number for v in o_enums[name].value}
        for value in sorted(set(pv) | set(ov), key=lambda v: (pv.get(v, ov.get(v)), v)):
            if pv.get(value) != ov.get(value):
                diffs.append(
                    f"enum {name}: value {value} pixie {pv.get(value)}, ours {ov.get(value)}"
                )

    for name in both("service", p_svcs, o_svcs):
        pm = {m.name: m for m in p_svcs[name].method}
        om = {m.name: m for m in o_svcs[name].method}
        for method in both(f"method of {name}:", pm, om):
            for key in ("input_type", "output_type", "client_streaming", "server_streaming"):
                pvalue, ovalue = getattr(pm[method], key), getattr(om[method], key)
                if pvalue != ovalue:
                    diffs.append(
                        f"method {name}.{method}: {key} pixie {pvalue!r}, ours {ovalue!r}"
                    )

    counts = (
        len(p_msgs),
        sum(len(m.field) for m in p_msgs.values()),
        len(p_enums),
        sum(len(e.value) for e in p_enums.values()),
        len(p_svcs),
        sum(len(s.method) for s in p_svcs.values()),
    )
    return diffs, counts


def find_message(files, path):
    """The DescriptorProto at a dotted path below the package, e.g. Relation.ColumnInfo."""
    names = path.split(".")
    for f in files:
        candidates = f.message_type
        for i, name in enumerate(names):
            found = [m for m in candidates if m.name == name]
            if not found:
                break
            if i == len(names) - 1:
                return found[0]
            candidates = found[0].nested_type
    raise KeyError(path)


def field(msg, name):
    return next(f for f in msg.field if f.name == name)


def renumber_table_id(files):
    field(find_message(files, "RowBatchData"), "table_id").number = 6


def leave_oneof(files):
    field(find_message(files, "Column"), "boolean_data").ClearField("oneof_index")


def retype_nested(files):
    field(find_message(files, "Relation.ColumnInfo"), "column_type").type = (
        descriptor_pb2.FieldDescriptorProto.TYPE_INT32
    )


def rename_nested(files):
    find_message(files, "ExecuteScriptRequest.FuncToExecute.ArgValue").name = "Arg"


def unmap_headers(files):
    entry = find_message(files, "Configs.OTelEndpointConfig.HeadersEntry")
    entry.options.map_entry = False


def renumber_enum_value(files):
    enum = next(e for f in files for e in f.enum_type if e.name == "SemanticType")
    next(v for v in enum.value if v.name == "ST_PORT").number = 1201


def unstream_health_check(files):
    svc = next(s for f in files for s in f.service if s.name == "VizierService")
    next(m for m in svc.method if m.name == "HealthCheck").server_streaming = False


MUTATIONS = (
    renumber_table_id,
    leave_oneof,
    retype_nested,
    rename_nested,
    unmap_headers,
    renumber_enum_value,
    unstream_health_check,
)


def self_test(pixie, ours_path):
    """True if every mutation of our descriptors is reported as a difference."""
    ok = True
    for mutation in MUTATIONS:
        files = list(our_files(ours_path).values())
        mutation(files)
        diffs, _ = compare(pixie, files)
        if diffs:
            print(f"self-test {mutation.__name__}: noticed ({diffs[0]})")
        else:
            print(f"self-test {mutation.__name__}: NOT NOTICED")
            ok = False
    return ok


def main(argv):
    args = argv[1:]
    run_self_test = "--self-test" in args
    args = [a for a in args if a != "--self-test"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    argv = [argv[0], args[0]]
    pixie = pixie_files()
    if not pixie:
        print(f"no descriptor of package {PACKAGE} found in pxapi", file=sys.stderr)
        return 1
    ours = our_files(argv[1])
    if not ours:
        print(f"no file of package {PACKAGE} in {argv[1]}", file=sys.stderr)
        return 1
    for name, (module, _) in sorted(pixie.items()):
        print(f"pixie: {name} (module {module})")
    for name in sorted(ours):
        print(f"ours: {name}")

    if run_self_test and not self_test([p for _, p in pixie.values()], argv[1]):
        print("self-test failed: the comparison misses changes", file=sys.stderr)
        return 1

    diffs, counts = compare([p for _, p in pixie.values()], list(ours.values()))
    for diff in diffs:
        print(f"DIFF {diff}")
    print(
        "compared %d messages (%d fields), %d enums (%d values), "
        "%d services (%d methods): %d differences" % (*counts, len(diffs))
    )
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
