"""Lines per function (and method) in a package, longest first: the check behind "no function in pipeline/
over about 60 lines". Reads the working tree, or a git revision with --rev.

    python tools/function_lengths.py [--package pipeline] [--rev COMMIT] [--top 3] [--limit 60]
"""
from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources(package: str, rev: str | None) -> dict[str, str]:
    if rev is None:
        return {p.relative_to(ROOT).as_posix(): p.read_text() for p in sorted((ROOT / package).glob("*.py"))}
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, f"{package}/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".py")}


def lengths(files: dict[str, str]) -> list[tuple[int, str]]:
    """(lines, "file:qualified name") for every function and method, longest first."""
    out = []
    for name, text in files.items():
        def visit(node, prefix=""):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qual = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        out.append((child.end_lineno - child.lineno + 1, f"{name}:{qual}"))
                    visit(child, qual + ".")
        visit(ast.parse(text))
    return sorted(out, reverse=True)


def main(argv=None) -> list[tuple[int, str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="pipeline")
    ap.add_argument("--rev", default=None)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--limit", type=int, default=60)
    args = ap.parse_args(argv)
    found = lengths(sources(args.package, args.rev))
    over = [f for f in found if f[0] > args.limit]
    print(f"{args.package}/ at {args.rev or 'the working tree'}: {len(found)} functions, {len(over)} over "
          f"{args.limit} lines; longest:")
    for n, name in found[:max(args.top, len(over))]:
        print(f"  {n:4d}  {name}")
    return found


if __name__ == "__main__":
    main()
