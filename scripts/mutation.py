"""Mutation testing over the core's decision points with mutmut (run by ``scripts/mutation``).

Reads the mutant name globs of ``scripts/mutation-targets``, runs ``mutmut run`` on them (mutmut
reads the files to mutate and the fast test selection from ``[tool.mutmut]`` in pyproject.toml),
then reports over the targeted mutants only:

    killed / (all - equivalent)

An equivalent mutant changes no behaviour anyone could observe; each one is listed in
``scripts/mutation-equivalent`` as ``<function> | <the mutated line> | <why>`` (keyed by the changed
text, not by mutmut's number, so the list survives unrelated edits). Every other survivor is
printed with its diff: add a test that kills it, or, if it truly is equivalent, list it.

Exit status: 0 when the score is at least ``--min-score`` (90), 1 below, 2 when mutmut failed.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "scripts" / "mutation-targets"
EQUIVALENT = ROOT / "scripts" / "mutation-equivalent"
NAME = re.compile(r"^\s*(\S+__mutmut_\d+): (\S.*)$")


def read_globs() -> list[str]:
    """The mutant name globs of scripts/mutation-targets (comments and blank lines skipped)."""
    return [line.strip() for line in TARGETS.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def function_of(name: str) -> str:
    """``panel.lifecycle.x_request__mutmut_12`` -> ``panel.lifecycle.x_request``."""
    return name.rsplit("__mutmut_", 1)[0]


def norm(text: str) -> str:
    return " ".join(text.split())


def read_equivalent() -> dict[tuple[str, str], str]:
    """``{(function, mutated line): reason}`` from scripts/mutation-equivalent."""
    found = {}
    if EQUIVALENT.exists():
        for raw in EQUIVALENT.read_text().splitlines():
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            function, line, why = (part.strip() for part in raw.split(" | ", 2))
            found[(function, norm(line))] = why
    return found


def mutmut(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["mutmut", *args], cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.stdout.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        sys.exit(2)
    return proc


def results() -> dict[str, str]:
    """Every mutant's status from ``mutmut results --all true`` (killed, survived, timeout...)."""
    out = {}
    for line in mutmut("results", "--all", "true").stdout.splitlines():
        match = NAME.match(line)
        if match:
            out[match.group(1)] = match.group(2).strip()
    return out


def mutated_lines(name: str) -> list[str]:
    """The added lines of the mutant's diff (``mutmut show``)."""
    diff = mutmut("show", name, check=False).stdout
    return [norm(line[1:]) for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("globs", nargs="*", help="mutant name globs (default: scripts/mutation-targets)")
    parser.add_argument("--report", action="store_true", help="report the last run without running mutmut")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--min-score", type=float, default=90.0)
    args = parser.parse_args()
    globs = args.globs or read_globs()
    if not args.report:
        proc = subprocess.run(["mutmut", "run", "--max-children", str(args.max_children), *globs], cwd=ROOT)
        if proc.returncode != 0:
            return 2
    statuses = {name: status for name, status in results().items()
                if any(fnmatch.fnmatch(name, g) for g in globs)}
    if not statuses:
        print("no mutant matched the targets: is mutants/ there (run without --report)?")
        return 2
    equivalent = read_equivalent()
    killed, survivors, equivalents, other = [], [], [], []
    for name, status in sorted(statuses.items(), key=lambda item: (function_of(item[0]), int(item[0].rsplit("_", 1)[1]))):
        if status == "killed":
            killed.append(name)
            continue
        lines = mutated_lines(name)
        why = next((equivalent[(function_of(name), line)] for line in lines
                    if (function_of(name), line) in equivalent), None)
        if why is not None and status == "survived":
            equivalents.append((name, lines, why))
        elif status in ("survived", "no tests"):
            survivors.append((name, status, lines))
        else:  # timeout, suspicious, segfault, ...: counted as not killed
            other.append((name, status, lines))
    counted = len(statuses) - len(equivalents)
    score = 100.0 * len(killed) / counted if counted else 100.0
    print(f"\nmutants: {len(statuses)}  killed: {len(killed)}  equivalent: {len(equivalents)}  "
          f"survived: {len(survivors)}  other: {len(other)}")
    print(f"score: {score:.1f} % of {counted} non-equivalent mutants killed (minimum {args.min_score:g} %)")
    for title, rows in (("survived (add a test, or list it in scripts/mutation-equivalent)", survivors),
                        ("not killed for another reason", other)):
        if rows:
            print(f"\n{title}:")
            for name, status, lines in rows:
                print(f"  {name} [{status}]: " + " / ".join(lines))
    if equivalents:
        print("\nequivalent (scripts/mutation-equivalent):")
        for name, lines, why in equivalents:
            print(f"  {name}: {' / '.join(lines)}  -- {why}")
    return 0 if score >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
