#!/usr/bin/python3
"""Regenerates the configuration table in README.md from .env.example.

.env.example is itself generated from the settings table in common/config.c, so the README,
--help and .env.example all come from one table. `--check` exits 1 when README.md is stale
(run by `make test`).
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- config:begin -->", "<!-- config:end -->"


def table(env_text):
    rows, section, comment = [], "", []
    for line in env_text.splitlines():
        m = re.match(r"# ---- (.+?) \(read by (.+?)\) ----", line)
        if m:
            section, comment = f"{m.group(1)} ({m.group(2)})", []
            rows.append(f"| **{section}** | | |")
            continue
        if not section:
            continue
        if line.startswith("# "):
            comment.append(line[2:].strip())
        elif re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            name, default = line.split("=", 1)
            desc = " ".join(comment).replace("|", "\\|")
            default = default.replace("|", "\\|")
            rows.append(f"| `{name}` | `{default}` | {desc} |" if default else f"| `{name}` | | {desc} |")
            comment = []
        elif not line.strip():
            comment = []
    head = "| Variable | Default | Meaning (allowed values) |\n|---|---|---|\n"
    return head + "\n".join(rows) + "\n"


def main():
    readme = (ROOT / "README.md").read_text()
    new_table = table((ROOT / ".env.example").read_text())
    pre, rest = readme.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    updated = f"{pre}{BEGIN}\n{new_table}{END}{post}"
    if "--check" in sys.argv:
        if updated != readme:
            print("README.md configuration table is stale: run scripts/gen-readme-config.py")
            return 1
        print("README.md configuration table matches .env.example")
        return 0
    (ROOT / "README.md").write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
