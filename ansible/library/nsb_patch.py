#!/usr/bin/python
# gdb-nsb: live patches on every matching process of a host, through the nsb runner (--json).
# GPL-2.0-or-later, like gdb-nsb.

DOCUMENTATION = r"""
module: nsb_patch
short_description: Apply, revert or check a gdb-nsb live patch on every matching process of a host
description:
  - Reads first, without pausing anything, which processes map the patch's target or carry the patch
    (C(nsb list -f PATH --json): /proc/PID/maps and /proc/PID/mem, no ptrace attach).
  - Then applies (C(nsb patch)) or reverts (C(nsb revert)) only where something is to change, so a second run
    reports C(changed=false). Check mode stops after the read: no process is paused.
  - The patch file must already be on the host (copy it first); its SHA-256 is verified before any use.
options:
  path: {description: Patch file on the managed host., required: true, type: path}
  sha256: {description: Expected SHA-256 of the file (hex); a mismatch fails before anything runs., required: true, type: str}
  state:
    description: C(applied), C(reverted), or C(checked) (report only, like check mode).
    choices: [applied, reverted, checked]
    default: applied
    type: str
  pids: {description: Only these processes (default every matching process)., type: list, elements: int}
  unmap: {description: With C(reverted), also unmap the patch memory (inactive records count too)., type: bool, default: false}
  timeout: {description: Seconds per process (nsb --timeout)., type: float, default: 60}
  retries: {description: Safe-point checks before giving up (nsb --retries)., type: int}
  nsb: {description: Command that runs the nsb CLI (split like a shell word list)., type: str, default: nsb}
"""

RETURN = r"""
processes:
  description: One entry per matching process; also under ansible_facts.nsb_patch.
  returned: always
  type: list
  sample: [{pid: 1234, comm: server, before: not applied, after: applied, code: 0, message: "..."}]
"""

import hashlib
import json
import os
import shlex

from ansible.module_utils.basic import AnsibleModule

# What each state wants, from the state the passive read found.
_NEEDS_CHANGE = {
    "applied": lambda state, unmap: state != "applied",
    "reverted": lambda state, unmap: state in ("applied", "partial", "target unloaded") or (unmap and state == "inactive"),
    "checked": lambda state, unmap: False,
}
# Exit codes that say "already as wanted" (5: already applied; 2: not applied).
_NOTHING_TO_DO = {"applied": (5,), "reverted": (2,)}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _nsb(module, args):
    """Run nsb with --json: (exit code, document)."""
    argv = shlex.split(module.params["nsb"]) + args + ["--json"]
    rc, out, err = module.run_command(argv)
    try:
        doc = json.loads(out)
    except ValueError:
        module.fail_json(msg="nsb printed no JSON document (exit %d): %s" % (rc, (err or out).strip()[-2000:]),
                         cmd=argv, rc=rc)
    return rc, doc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            sha256=dict(type="str", required=True),
            state=dict(type="str", default="applied", choices=["applied", "reverted", "checked"]),
            pids=dict(type="list", elements="int"),
            unmap=dict(type="bool", default=False),
            timeout=dict(type="float", default=60.0),
            retries=dict(type="int"),
            nsb=dict(type="str", default="nsb"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path, state = p["path"], p["state"]
    if not os.path.isfile(path):
        module.fail_json(msg="patch file not found on the host: %s" % path)
    actual = _sha256(path)
    if actual != p["sha256"].strip().lower():
        module.fail_json(msg="checksum mismatch for %s: sha256 %s, expected %s; nothing was run"
                         % (path, actual, p["sha256"]))

    rc, listed = _nsb(module, ["list", "-f", path])
    if "processes" not in listed or (rc != 0 and not listed["processes"]):
        module.fail_json(msg="nsb list: %s" % listed.get("message", "exit %d" % rc), rc=rc)
    procs = [d for d in listed["processes"] if not p["pids"] or d["pid"] in p["pids"]]
    results = {d["pid"]: {"pid": d["pid"], "comm": d.get("comm", ""), "before": d.get("state", d["message"]),
                          "after": d.get("state", ""), "code": d["code"], "message": d["message"]} for d in procs}
    to_change = sorted(pid for pid, r in results.items() if r["code"] == 0 and _NEEDS_CHANGE[state](r["before"], p["unmap"]))
    failed = [r for r in results.values() if r["code"] != 0]
    patch = listed["processes"][0]["patch"] if listed["processes"] else {"path": path}

    changed = False
    if to_change and not module.check_mode and state != "checked":
        args = ["patch" if state == "applied" else "revert", "-p", ",".join(str(x) for x in to_change), "-f", path,
                "--timeout", "%g" % p["timeout"]]
        if p["retries"] is not None:
            args += ["--retries", str(p["retries"])]
        if state == "reverted" and p["unmap"]:
            args.append("--unmap")
        rc, done = _nsb(module, args)
        if not done.get("processes"):
            module.fail_json(msg="nsb %s: %s" % (args[0], done.get("message", "exit %d" % rc)), rc=rc)
        for d in done["processes"]:
            r = results[d["pid"]]
            r.update(code=d["code"], message=d["message"])
            if d["code"] == 0:
                changed = True
                r["after"] = state.replace("reverted", "not applied")
            elif d["code"] in _NOTHING_TO_DO[state]:
                r["code"] = 0
            else:
                failed.append(r)
    elif to_change and state != "checked":
        changed = True  # check mode: what a real run would change, from the passive read
        for pid in to_change:
            results[pid]["after"] = "would be " + state

    processes = [results[pid] for pid in sorted(results)]
    facts = {"nsb_patch": {"path": path, "sha256": actual, "build_id": patch.get("build_id", ""),
                           "target_build_id": patch.get("target_build_id", ""), "state": state,
                           "processes": processes}}
    if failed:
        module.fail_json(msg="; ".join("pid %d: %s" % (r["pid"], r["message"]) for r in failed),
                         changed=changed, processes=processes, ansible_facts=facts)
    module.exit_json(changed=changed, processes=processes, ansible_facts=facts)


if __name__ == "__main__":
    main()
