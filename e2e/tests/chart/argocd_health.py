"""Runs the Argo CD health checks of charts/argocd-health.yaml on sample objects.

Reads {"config": PATH, "objects": [object, ...]} as JSON on stdin and writes
[{"kind", "name", "status", "message"}, ...] as JSON on stdout: what Argo CD would show
for each object. Argo CD runs the scripts with gopher-lua (Lua 5.1) and `obj` set to the
object; here lupa's Lua runs them the same way (the scripts use nothing that differs).
"""

import json
import sys

import helm_python as helm
import lupa

PREFIX = "resource.customizations.health."


def main():
    req = json.load(sys.stdin)
    with open(req["config"], encoding="utf-8") as f:
        data = helm.values_from_yaml(f.read())["data"]
    answers = []
    for obj in req["objects"]:
        group = obj["apiVersion"].split("/")[0]
        key = f"{PREFIX}{group}_{obj['kind']}"
        lua = lupa.LuaRuntime()
        lua.globals().obj = lua.table_from(obj, recursive=True)
        result = lua.execute(data[key])
        answers.append(
            {
                "kind": obj["kind"],
                "name": obj["metadata"]["name"],
                "status": result["status"],
                "message": result["message"],
            }
        )
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
