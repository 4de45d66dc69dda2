#!/usr/bin/env python3
"""Checks the Grafana dashboards of this folder: each file is JSON, and every panel query is
valid PromQL (the Grafana variables replaced by values, then each query checked by
`promtool check rules` as a recording rule). Run by .ci/run; needs promtool."""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

here = pathlib.Path(__file__).parent
rules = []
for path in sorted(here.glob("*.json")):
    dash = json.loads(path.read_text())
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$queue", ".*")
            rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
    print(f"{path.name}: {len(dash['panels'])} panels")
with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
    json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)
code = subprocess.call(["promtool", "check", "rules", f.name])
os.unlink(f.name)
sys.exit(code)
