"""`nsb list`: the live patches applied in processes (nsb-list, or host-wide without attaching).

Options and help: gdb_nsb/options.py."""

import sys

from gdb_nsb import errors, options, patchfiles
from gdb_nsb.standalone import runner


def add_arguments(parser):
    runner.add_arguments(parser, "list")


def _prepare(args):
    if args.patch:
        raise errors.UsageError("-f PATCH goes with the host-wide list (no -p, no --remote)")
    return options.forward("list", args), None


def run(args):
    if args.pid or args.remote:
        return runner.run("list", args, _prepare)
    try:
        return _host_wide(args)
    except errors.NsbError as e:
        if not args.json:
            raise
        runner.print_json("list", e.exit_code, [], message=str(e))
        return e.exit_code


def _host_wide(args):
    from gdb_nsb.standalone import discover, hostwide, progress
    from gdb_nsb.standalone.patch_cmd import require_patch

    dirs = patchfiles.split_dirs(args.patch_dir)
    show = progress.wanted(args.json)
    if not args.patch:
        docs, unreadable = hostwide.list_all(patch_dirs=dirs, show_progress=show)
        info = None
    else:
        _path, load_info = require_patch(args)
        info = load_info()
        carrying, unreadable = hostwide.registry_processes()
        mapping = discover.processes_mapping_build_id(info["target_build_id"])
        docs, _ = hostwide.list_all(sorted(set(carrying) | set(mapping)), dirs, show_progress=show)
        kept = []
        for d in docs:
            state = hostwide.patch_state(d, info["build_id"], info["target_build_id"])
            if state == "not applied" and d["pid"] not in mapping:
                continue  # a patched process, but neither this patch's target nor its carrier
            d["patch"], d["state"] = dict(info), state
            d["lines"].append("patch %s: %s" % (info["build_id"][:16], state))
            kept.append(d)
        docs = kept
    note = None
    if unreadable:
        note = ("%d process%s not searched: this user may not read %s memory map"
                % (len(unreadable), "" if len(unreadable) == 1 else "es", "its" if len(unreadable) == 1 else "their"))
    code = next((d["code"] for d in docs if d["code"] != 0), 0)
    if args.json:
        runner.print_json("list", code, docs, message=note)
        return code
    if not docs:
        print("no process on this host %s" % ("carries live patches" if info is None else
                                             "maps the target of %s or carries it" % args.patch))
    for d in docs:
        runner.print_human(d, True, args.verbose)
    if note:
        print("nsb: " + note, file=sys.stderr)
    return code
