"""The README's benchmark table, made from ``benchmarks/results.json`` (the only source of the figures it quotes).

    python benchmarks/table.py            # print the table
    python benchmarks/table.py --readme   # replace the table between the README's markers

Each row is one full-size record: its summary lines, when it was taken, the load average at its start and end, and
the command that took it. A test checks that the README holds exactly this table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE.parent / "README.md"
START = "<!-- benchmarks: made by benchmarks/table.py from benchmarks/results.json; do not edit by hand -->"
END = "<!-- end of benchmarks -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _load(entry: dict[str, Any]) -> str:
    load = entry.get("load_average") or {}
    start, end = load.get("start"), load.get("end")
    return f"{start[0]:.1f} → {end[0]:.1f}" if start and end else "?"


def table(results: dict[str, Any]) -> str:
    """The markdown table of every record in ``results`` (a results file's content), with the machine it was on."""
    machine = results.get("machine") or {}
    lines = [
        START,
        f"Machine: {machine.get('cpu_count', '?')} cores, {machine.get('cpu_model', '?')}, Python "
        f"{machine.get('python', '?')}. Load: the 1-minute load average at the start and the end of the record.",
        "",
        "| benchmark | figures | taken (UTC), load | command |",
        "|---|---|---|---|",
    ]
    for name, entry in sorted(results.get("benchmarks", {}).items()):
        figures = "<br>".join(_cell(s) for s in entry.get("summary", []))
        when = str(entry.get("created", "?"))[:16].replace("T", " ")
        command = _cell(str(entry.get("command", "?")).replace(".venv/bin/python ", ""))
        lines.append(f"| `{name}` | {figures} | {when}, load {_load(entry)} | `{command}` |")
    lines.append(END)
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """The table now in the README text (between the markers); empty when the markers are missing."""
    if START not in text or END not in text:
        return ""
    return text[text.index(START) : text.index(END) + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true", help="write the table into README.md between its markers")
    args = parser.parse_args(argv)
    made = table(json.loads(RESULTS.read_text()))
    if not args.readme:
        print(made)
        return 0
    text = README.read_text()
    old = readme_block(text)
    if not old:
        print(
            f"error: README.md lacks the markers {START!r} … {END!r}; add them where the table belongs", file=sys.stderr
        )
        return 2
    README.write_text(text.replace(old, made))
    print(f"wrote the table of {RESULTS.name} into {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
