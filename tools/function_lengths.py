"""Lines per function (and method) in a package, longest first: the check behind "no function in pipeline/
over about 60 lines". Reads the working tree, or git revisions with --rev (several: one summary each, e.g.
before and after).

    python tools/function_lengths.py [--package pipeline] [--rev COMMIT ...] [--top 3] [--limit 60] [--json OUT]
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources(package: str, rev: str | None) -> dict[str, str]:
    if not rev:
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


def summary(package: str, rev: str | None, top: int, limit: int) -> dict:
    found = lengths(sources(package, rev))
    over = [f for f in found if f[0] > limit]
    print(f"{package}/ at {rev or 'the working tree'}: {len(found)} functions, {len(over)} over {limit} lines; "
          "longest:")
    longest = [{"lines": n, "function": name} for n, name in found[:max(top, len(over))]]
    for row in longest:
        print(f"  {row['lines']:4d}  {row['function']}")
    commit = rev and subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                                    text=True).stdout.strip()
    return {"rev": commit or "working tree", "functions": len(found), "over_limit": len(over), "longest": longest}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="pipeline")
    ap.add_argument("--rev", nargs="*", default=[None],
                    help='git revisions (default: the working tree; "" for it among revisions)')
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--json", type=Path, default=None, help="also write the summaries here")
    args = ap.parse_args(argv)
    res = [summary(args.package, rev, args.top, args.limit) for rev in args.rev]
    if args.json:
        args.json.write_text(json.dumps({"package": args.package, "limit": args.limit, "revs": res}, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
