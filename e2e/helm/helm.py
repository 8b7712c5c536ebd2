"""Runs Helm (helm-python-sdk, i.e. Helm's own Go library) for the chart tests.

Reads one JSON request on stdin and writes one JSON answer on stdout:

  {"op": "lint", "chart": DIR, "values_files": [...], "set": {...}, "namespace": NS}
      -> {"messages": [{"severity", "path", "error"}], "errors": [...]}
         (helm lint --strict: severity 1 info, 2 warning, 3 error)
  {"op": "values", "values_files": [...], "set": {...}}
      -> the user's values, parsed by Helm and merged (without the chart's defaults)
  {"op": "render", "chart": DIR, "values_files": [...], "set": {...},
   "name": RELEASE, "namespace": NS}
      -> {"manifests": {template: yaml}, "objects": [object, ...],
          "crds": [{"filename", "data"}], "notes": text, "defaults": {...}}
         (helm template: values checked against values.schema.json first)
      or {"error": message, "type": exception class} when Helm refuses.
"""

import json
import sys

import helm_python as helm


def merge(base, override):
    """Deep-merges `override` into `base`, as Helm does with -f and --set."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def user_values(req):
    values = {}
    for path in req.get("values_files", []):
        with open(path, encoding="utf-8") as f:
            merge(values, helm.values_from_yaml(f.read()))
    return merge(values, req.get("set", {}))


def documents(text):
    """The objects of a multi-document YAML stream, parsed by Helm's own YAML reader."""
    docs, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            docs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    docs.append("\n".join(current))
    objects = []
    for doc in docs:
        body = [l for l in doc.splitlines() if l.strip() and not l.lstrip().startswith("#")]
        if body:
            objects.append(helm.values_from_yaml(doc))
    return objects


def main():
    req = json.load(sys.stdin)
    values = user_values(req)
    if req["op"] == "lint":
        report = helm.lint(req["chart"], values, strict=True, namespace=req.get("namespace"))
        answer = {"messages": report["messages"], "errors": report["errors"]}
    elif req["op"] == "values":
        answer = values
    elif req["op"] == "render":
        try:
            with helm.Chart.load(req["chart"]) as chart:
                manifests = chart.render(
                    values,
                    name=req["name"],
                    namespace=req["namespace"],
                    is_install=True,
                )
                crds = chart.crds
                defaults = chart.values
        except helm.HelmError as e:
            answer = {"error": str(e), "type": type(e).__name__}
        else:
            notes = {k: v for k, v in manifests.items() if k.endswith("NOTES.txt")}
            manifests = {k: v for k, v in manifests.items() if k not in notes}
            objects = [o for _, text in sorted(manifests.items()) for o in documents(text)]
            answer = {
                "manifests": manifests,
                "objects": objects,
                "crds": [{"filename": c["filename"], "data": c["data"]} for c in crds],
                "notes": "".join(notes.values()),
                "defaults": defaults,
            }
    else:
        raise SystemExit(f"unknown op {req['op']!r}")
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
