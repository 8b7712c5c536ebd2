#!/usr/bin/env python3
"""Runs Pixie's own px/ scripts, unmodified, against a running `px local` (or any
address `px run` reaches), each with the defaults its vis.json gives, and prints which
compile and execute and why the others fail.

Pixie's scripts are not part of this repository: get them from Pixie's public
repository (src/pxl_scripts/px/), one directory per script, and pass that directory:

    sudo target/debug/px local --quiet &          # with some traffic to trace
    bench/pixie_scripts.py /path/to/pixie/src/pxl_scripts/px [--px target/debug/px]

A script with a vis.json runs once per function its widgets call (as Pixie's UI does),
with each argument from the widget's value or its variable's default; a script without
one runs as it is. Prints one line per script and a summary; `--json` prints the results
as JSON.
"""
import argparse
import json
import os
import re
import subprocess
import sys


def calls(vis):
    """The (function, {arg: value}) calls the widgets of a vis.json make."""
    defaults = {}
    for var in vis.get("variables", []):
        default = var.get("defaultValue", "")
        # Some vis.json files write the default as a protobuf StringValue object.
        if isinstance(default, dict):
            default = default.get("value", "")
        defaults[var["name"]] = default
    seen = []
    funcs = {}
    for g in vis.get("globalFuncs", []):
        funcs[g.get("outputName", "")] = g.get("func", {})
    for w in vis.get("widgets", []):
        func = w.get("func") or funcs.get(w.get("globalFuncOutputName", ""), {})
        if not func:
            continue
        args = {}
        for a in func.get("args", []):
            if "value" in a:
                args[a["name"]] = a["value"]
            else:
                args[a["name"]] = defaults.get(a.get("variable", ""), "")
        call = (func["name"], args)
        if call not in seen:
            seen.append(call)
    return seen


def run(px, script, func=None, args=None, timeout=60):
    cmd = [px, "run", "-f", script, "-o", "json"]
    if func:
        cmd += ["--func", func, "--"] + [f"--{k}={v}" for k, v in (args or {}).items()]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    if out.returncode != 0:
        lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
        return False, lines[-1] if lines else f"exit {out.returncode}"
    return True, ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--px", default="target/debug/px")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    results = []
    for name in sorted(os.listdir(opts.dir)):
        folder = os.path.join(opts.dir, name)
        if not os.path.isdir(folder):
            continue
        pxls = sorted(f for f in os.listdir(folder) if f.endswith(".pxl"))
        if not pxls:
            continue
        script = os.path.join(folder, pxls[0])
        vis_path = os.path.join(folder, "vis.json")
        errors = []
        if os.path.exists(vis_path):
            with open(vis_path) as f:
                vis = json.load(f)
            todo = calls(vis) or [(None, None)]
        else:
            # No widgets: run the script; one that displays nothing is a library of
            # functions, so call each that takes no argument.
            with open(script) as f:
                source = f.read()
            todo = [(None, None)]
            if "px.display(" not in source:
                todo = [(m, {}) for m in re.findall(r"^def (\w+)\(\s*\)", source, re.M)] or todo
        for func, args in todo:
            ok, why = run(opts.px, script, func, args)
            if not ok:
                errors.append(f"{func or 'script'}: {why}")
        results.append({"script": f"px/{name}", "ok": not errors, "errors": errors})
    if opts.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        for r in results:
            print(("ok    " if r["ok"] else "FAIL  ") + r["script"] + ("" if r["ok"] else "  " + r["errors"][0]))
    passed = sum(r["ok"] for r in results)
    print(f"{passed} of {len(results)} scripts compile and execute", file=sys.stderr)


if __name__ == "__main__":
    main()
