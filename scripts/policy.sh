#!/usr/bin/env bash
# Policy scan (`make policy`): checkov over the chart's rendered manifests (every ci/ scenario)
# and the Dockerfiles. checkov's pins clash with kfp's, so it lives in its own virtualenv
# (.venv-policy, created on first use); the chart is rendered by Helm's engine from .venv
# (helm-python-sdk). Skipped checks and their justifications: .checkov.yaml.
# Exit status: checkov's (non-zero on any failed check).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
MAIN_VENV=${VENV:-.venv}
POLICY_VENV=${POLICY_VENV:-.venv-policy}
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}

if [ ! -x "$MAIN_VENV/bin/python" ] || ! "$MAIN_VENV/bin/python" -c "import helm_python, yaml" 2>/dev/null; then
  echo "policy: $MAIN_VENV with helm-python-sdk is needed to render the chart (run: make install-dev)" >&2
  exit 2
fi
if ! "$POLICY_VENV/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  echo "policy: installing checkov $CHECKOV_VERSION into $POLICY_VENV"
  "$PY" -m venv "$POLICY_VENV"
  "$POLICY_VENV/bin/pip" install -q -U pip
  "$POLICY_VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# One folder of manifests per scenario, one file per template; NOTES.txt is not a manifest.
"$MAIN_VENV/bin/python" - "$OUT" <<'PY'
import sys
from pathlib import Path

import helm_python
import yaml

out = Path(sys.argv[1])
chart_dir = Path("charts/maskgrpo")
chart = helm_python.Chart.load(chart_dir)
for values_file in sorted((chart_dir / "ci").glob("*-values.yaml")):
    scenario = values_file.name.removesuffix("-values.yaml")
    values = yaml.safe_load(values_file.read_text())
    rendered = chart.render(values, name="maskgrpo", namespace=values["kfp"]["namespace"])
    target = out / scenario
    target.mkdir(parents=True)
    count = 0
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")) or not text.strip():
            continue
        (target / template.replace("/", "__")).write_text(text)
        count += sum(1 for doc in yaml.safe_load_all(text) if doc)
    print(f"policy: rendered {scenario}: {count} objects")
PY

status=0
"$POLICY_VENV/bin/checkov" --config-file .checkov.yaml --directory "$OUT" --framework kubernetes || status=$?
"$POLICY_VENV/bin/checkov" --config-file .checkov.yaml --directory images --framework dockerfile || status=$?
exit "$status"
