"""Regenerate the committed, generated files from the package.

    python scripts/generate.py          # write them
    python scripts/generate.py --check  # exit 1 listing the stale ones (the tests call this)

Generated: components/<stage>.yaml (KFP component specs, one per stage kind) and
charts/maskgrpo/values.schema.json (the Helm values schema: RunSpec's JSON schema for the run
part, a hand-written schema for the infrastructure part).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def generated_files() -> dict[Path, str]:
    """Every generated file's path and its expected text."""
    from chart_schema import render_values_schema  # scripts/chart_schema.py
    from maskgrpo.runners.kfp.components import render_components

    files = {ROOT / "charts" / "maskgrpo" / "values.schema.json": render_values_schema()}
    for name, text in render_components().items():
        files[ROOT / "components" / f"{name}.yaml"] = text
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale files instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated_files().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale generated files (run `make generate`):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
