"""Mutation testing over the core's decision points with mutmut (run by ``scripts/mutation``).

Reads the mutant name globs of ``scripts/mutation-targets``, runs ``mutmut run`` on them (mutmut
reads the files to mutate and the fast test selection from ``[tool.mutmut]`` in pyproject.toml),
then reports over the targeted mutants only:

    killed / (all - equivalent)

(a mutant whose tests ran past mutmut's timeout counts as killed: the suite would hang on it,
and CI stops a run that does)

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
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "scripts" / "mutation-targets"
EQUIVALENT = ROOT / "scripts" / "mutation-equivalent"
DETECTED = ("killed", "timeout")  # a mutant that makes a test hang is detected (CI stops such a run)
NAME = re.compile(r"^\s*(\S+__mutmut_\d+): (\S.*)$")


def read_globs() -> list[str]:
    """The mutant name globs of scripts/mutation-targets (comments and blank lines skipped)."""
    return [line.strip() for line in TARGETS.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def function_of(name: str) -> str:
    """``panel.lifecycle.x_request__mutmut_12`` -> ``panel.lifecycle.x_request``."""
    return name.rsplit("__mutmut_", 1)[0]


def mutant_order(name: str) -> tuple[str, int]:
    """Sort key: by function, then by mutmut's number (``..._mutmut_9`` before ``..._mutmut_10``)."""
    return function_of(name), int(name.rsplit("_", 1)[1])


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


_FUNCTIONS: dict[Path, dict[str, str]] = {}


def _functions(path: Path) -> dict[str, str]:
    """Every top-level function's source in a mutated file of mutants/ (cached)."""
    if path not in _FUNCTIONS:
        import ast

        text = path.read_text()
        lines = text.splitlines()
        found = {}
        for node in ast.parse(text).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[node.name] = "\n".join(lines[node.lineno - 1:node.end_lineno])
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        found[f"{node.name}.{item.name}"] = "\n".join(lines[item.lineno - 1:item.end_lineno])
        _FUNCTIONS[path] = found
    return _FUNCTIONS[path]


def mutated_lines(name: str) -> list[str]:
    """The lines the mutant changed (from mutants/, compared with the original function)."""
    import difflib

    module, _, function = function_of(name).rpartition(".")
    number = name.rsplit("__mutmut_", 1)[1]
    path = ROOT / "mutants" / Path(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = ROOT / "mutants" / Path(*module.split(".")) / "__init__.py"
    functions = _functions(path)
    key = function
    if "\u01c1" in function:  # xǁClassǁmethod: the mutants are methods of the class
        _, cls, method = function.split("\u01c1")
        key = f"{cls}.{method}"
    orig = functions.get(f"{key}__mutmut_orig", "")
    mutant = functions.get(f"{key}__mutmut_{number}", "")
    orig_body, mutant_body = orig.splitlines()[1:], mutant.splitlines()[1:]  # the def lines differ by name
    changed = [norm(line[1:]) for line in difflib.unified_diff(orig_body, mutant_body, lineterm="", n=0)
               if line.startswith("+") and not line.startswith("+++")]
    if not changed and orig and mutant:  # a mutated signature (a default): the def line, named as in the source
        plain = key.rsplit(".", 1)[-1]
        source = plain[2:] if plain.startswith("x_") else plain  # mutmut names the copies x_<name>__mutmut_N
        orig_def = orig.splitlines()[0].replace(f"{plain}__mutmut_orig", source)
        mutant_def = mutant.splitlines()[0].replace(f"{plain}__mutmut_{number}", source)
        if orig_def != mutant_def:
            changed = [norm(mutant_def)]
    return changed or ["(no textual change found)"]


def _blocks(diff: str) -> tuple[str, list[tuple[str, str]]]:
    """The file and the ``(old text, new text)`` of each hunk of one ``mutmut show`` diff."""
    path, hunks, current = "", [], None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[4:].strip()
        elif line.startswith("@@"):
            current = ([], [])
            hunks.append(current)
        elif current is not None and not line.startswith("--- "):
            tag, text = (line[:1], line[1:]) if line else (" ", "")
            if tag in " -":
                current[0].append(text)
            if tag in " +":
                current[1].append(text)
    return path, [("\n".join(old) + "\n", "\n".join(new) + "\n") for old, new in hunks]


def try_mutants(names: list[str], pytest_args: list[str]) -> int:
    """``--try``: put each mutant into the source tree (its diff from ``mutmut show``), run pytest
    with ``pytest_args`` (``-x``), put the source back (also on Ctrl-C), and print killed or
    SURVIVES. The quick check of a new test against the mutants it is meant to kill; mutmut's own
    run is still what the score counts."""
    survivors = 0
    for name in names:
        path, hunks = _blocks(mutmut("show", name).stdout)
        target = ROOT / path
        original = target.read_text()
        mutated = original
        for old, new in hunks:
            if mutated.count(old) != 1:
                print(f"{name}: cannot apply (its text is not unique in {path})", flush=True)
                break
            mutated = mutated.replace(old, new)
        else:
            try:
                target.write_text(mutated)
                proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly",
                                       "-p", "no:cacheprovider", *pytest_args], cwd=ROOT,
                                      env={**os.environ, "CI": "true"}, capture_output=True, text=True)
            finally:
                target.write_text(original)
            if proc.returncode not in (0, 1):  # 5: no test selected; 2-4: usage or internal errors
                print(f"{name}: pytest could not run the tests (exit {proc.returncode})", flush=True)
                return 2
            survived = proc.returncode == 0
            survivors += survived
            print(f"{name}: {'SURVIVES' if survived else 'killed'}", flush=True)
    return 1 if survivors else 0


def print_markdown(statuses: dict[str, str], equivalents: list) -> None:
    """A per-function table: mutants, killed, equivalent, survived, not checked."""
    equivalent = {name for name, _, _ in equivalents}
    rows: dict[str, list[int]] = {}
    for name, status in statuses.items():
        row = rows.setdefault(function_of(name), [0, 0, 0, 0, 0])
        row[0] += 1
        if status in DETECTED:
            row[1] += 1
        elif name in equivalent:
            row[2] += 1
        elif status == "not checked":
            row[4] += 1
        else:
            row[3] += 1
    print("\n| function | mutants | killed | equivalent | survived | not checked |\n| --- | --- | --- | --- | --- | --- |")
    for function, row in sorted(rows.items()):
        print(f"| `{function.replace('.x_', '.', 1)}` | " + " | ".join(str(n) for n in row) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("globs", nargs="*", help="mutant name globs (default: scripts/mutation-targets)")
    parser.add_argument("--report", action="store_true", help="report the last run without running mutmut")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument("--markdown", action="store_true", help="also print a per-function table (for the README)")
    parser.add_argument("--resume", action="store_true",
                        help="run only the targeted mutants not checked yet, cut off by a timeout or surviving "
                             "(a test may have been added since) and keep the killed ones (mutmut re-runs every "
                             "mutant a glob names)")
    parser.add_argument("--unchecked", action="store_true",
                        help="like --resume, but only the mutants never checked (a survivor is re-run later "
                             "with --resume)")
    parser.add_argument("--try", dest="try_tests", metavar="PYTEST_ARGS",
                        help="put each named mutant into the source, run these tests (e.g. "
                             "'tests/test_api.py -k limit'), put it back: killed or SURVIVES (mutmut's "
                             "results are not changed)")
    args = parser.parse_args()
    if args.try_tests:
        names = sorted((name for name in results() if any(fnmatch.fnmatch(name, g) for g in args.globs)),
                       key=mutant_order)
        return try_mutants(names, args.try_tests.split())
    globs = args.globs or read_globs()
    if not args.report:
        names = globs
        if args.resume or args.unchecked:
            wanted = ("not checked",) if args.unchecked else \
                ("not checked", "timeout", "survived", "suspicious", "segfault")
            names = [name for name, status in results().items()
                     if status in wanted and any(fnmatch.fnmatch(name, g) for g in globs)]
            print(f"resuming: {len(names)} mutant(s) to run", flush=True)
        proc = subprocess.run(["mutmut", "run", "--max-children", str(args.max_children), *names], cwd=ROOT) \
            if names else subprocess.CompletedProcess([], 0)
        if proc.returncode != 0:
            return 2
    statuses = {name: status for name, status in results().items()
                if any(fnmatch.fnmatch(name, g) for g in globs)}
    if not statuses:
        print("no mutant matched the targets: is mutants/ there (run without --report)?")
        return 2
    equivalent = read_equivalent()
    killed, survivors, equivalents, other, unchecked = [], [], [], [], []
    for name, status in sorted(statuses.items(), key=lambda item: mutant_order(item[0])):
        if status in DETECTED:
            killed.append(name)
            continue
        lines = mutated_lines(name)
        why = next((equivalent[(function_of(name), line)] for line in lines
                    if (function_of(name), line) in equivalent), None)
        if why is not None and status == "survived":
            equivalents.append((name, lines, why))
        elif status == "not checked":
            unchecked.append(name)
        elif status in ("survived", "no tests"):
            survivors.append((name, status, lines))
        else:  # suspicious, segfault, ...: counted as not killed
            other.append((name, status, lines))
    counted = len(statuses) - len(equivalents)  # a mutant not checked yet counts as not killed
    score = 100.0 * len(killed) / counted if counted else 100.0
    checked = counted - len(unchecked)
    timeouts = sum(1 for name in killed if statuses[name] == "timeout")
    print(f"\nmutants: {len(statuses)}  killed: {len(killed)} (of which {timeouts} by a timeout)  "
          f"equivalent: {len(equivalents)}  "
          f"survived: {len(survivors)}  other: {len(other)}  not checked: {len(unchecked)}")
    print(f"score: {score:.1f} % of {counted} non-equivalent mutants killed (minimum {args.min_score:g} %)"
          + (f"; {100.0 * len(killed) / checked:.1f} % of the {checked} checked" if unchecked and checked else ""))
    if args.markdown:
        print_markdown(statuses, equivalents)
    for title, rows in (("survived (add a test, or list it in scripts/mutation-equivalent)", survivors),
                        ("not killed for another reason", other)):
        if rows:
            print(f"\n{title}:")
            for name, status, lines in rows:
                print(f"  {name} [{status}]: " + " / ".join(lines))
    if unchecked:
        by_function = Counter(function_of(name) for name in unchecked)
        print("\nnot checked yet (scripts/mutation --unchecked): "
              + ", ".join(f"{f} {n}" for f, n in by_function.most_common()))
    if equivalents:
        print("\nequivalent (scripts/mutation-equivalent):")
        for name, lines, why in equivalents:
            print(f"  {name}: {' / '.join(lines)}  -- {why}")
    return 0 if score >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
