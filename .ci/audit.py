#!/usr/bin/env python3
"""Dependency checks, offline: every crate in Cargo.lock against the RustSec advisory
database, every crate's license against an allow-list, and no git dependencies.

    python3 .ci/audit.py                  # with the snapshot in .ci/advisories
    python3 .ci/audit.py --db DIR         # with a full copy of the advisory database
    python3 .ci/audit.py --refresh DIR    # rewrite .ci/advisories from a full copy

The snapshot holds the advisories of every crate Cargo.lock named when it was refreshed, and
the list of those crate names: a crate added since makes the check fail until the snapshot is
refreshed, so a new dependency cannot slip past unchecked.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, ".ci", "advisories")

# Licenses a dependency may be used under (SPDX ids).
ALLOWED = {
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "ISC", "Zlib", "0BSD", "CC0-1.0", "Unlicense", "BSL-1.0", "MPL-2.0", "Unicode-3.0",
    "Unicode-DFS-2016", "CDLA-Permissive-2.0",
}


def lock_packages():
    with open(os.path.join(ROOT, "Cargo.lock"), "rb") as f:
        return tomllib.load(f)["package"]


def parse_version(v):
    core = v.split("+")[0]
    core, _, pre = core.partition("-")
    parts = [int(x) for x in core.split(".")]
    while len(parts) < 3:
        parts.append(0)
    # A pre-release sorts before its release.
    return (parts[0], parts[1], parts[2], 0 if pre else 1, pre)


def matches(version, req):
    """Whether `version` satisfies one requirement such as ">= 1.2.3, < 2" or "^0.4"."""
    v = parse_version(version)
    for comp in req.split(","):
        comp = comp.strip()
        m = re.match(r"^(>=|<=|>|<|=|\^|~)?\s*(\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?)$", comp)
        if not m:
            raise ValueError(f"cannot read version requirement {comp!r}")
        op, bound = m.group(1) or "^", m.group(2)
        b = parse_version(bound)
        given = len(bound.split("-")[0].split("."))
        if op == ">=" and not v >= b:
            return False
        if op == ">" and not v > b:
            return False
        if op == "<=" and not v <= b:
            return False
        if op == "<" and not v < b:
            return False
        if op == "=" and v[:3] != b[:3]:
            return False
        if op == "~":
            upper = (b[0], b[1] + 1, 0) if given >= 2 else (b[0] + 1, 0, 0)
            if not (v >= b and v[:3] < upper):
                return False
        if op == "^":
            if b[0] > 0 or given == 1:
                upper = (b[0] + 1, 0, 0)
            elif b[1] > 0 or given == 2:
                upper = (0, b[1] + 1, 0)
            else:
                upper = (0, 0, b[2] + 1)
            if not (v >= b and v[:3] < upper):
                return False
    return True


def advisory(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".toml"):
        return tomllib.loads(text)
    m = re.search(r"```toml\n(.*?)\n```", text, re.S)
    return tomllib.loads(m.group(1)) if m else None


def toml_string(s):
    return json.dumps(s)


def slim(a):
    """What the check needs of an advisory (no prose, no links)."""
    info = a["advisory"]
    lines = ["[advisory]"]
    for k in ("id", "package", "date", "informational", "withdrawn"):
        if k in info:
            lines.append(f"{k} = {toml_string(str(info[k]))}")
    lines.append("[versions]")
    for k in ("patched", "unaffected"):
        vs = a.get("versions", {}).get(k, [])
        lines.append(f"{k} = [{', '.join(toml_string(v) for v in vs)}]")
    return "\n".join(lines) + "\n"


def check_advisories(db, packages):
    """Returns (vulnerabilities, warnings) as printable lines."""
    vulns, warns = [], []
    crates_dir = os.path.join(db, "crates")
    for p in packages:
        d = os.path.join(crates_dir, p["name"])
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            a = advisory(os.path.join(d, name))
            if not a:
                continue
            info = a["advisory"]
            if info.get("withdrawn"):
                continue
            versions = a.get("versions", {})
            safe = versions.get("patched", []) + versions.get("unaffected", [])
            if any(matches(p["version"], r) for r in safe):
                continue
            line = f"{info['id']}: {p['name']} {p['version']}"
            if info.get("informational"):
                warns.append(f"{line} ({info['informational']})")
            else:
                vulns.append(line)
    return vulns, warns


def spdx_ok(expr):
    """Evaluates an SPDX expression against ALLOWED (OR: one side, AND: both)."""
    expr = expr.replace("/", " OR ")
    tokens = re.findall(r"\(|\)|[A-Za-z0-9.+-]+(?: WITH [A-Za-z0-9.+-]+)?", expr)
    pos = 0

    def term():
        nonlocal pos
        if tokens[pos] == "(":
            pos += 1
            v = disj()
            pos += 1
            return v
        t = tokens[pos]
        pos += 1
        return t in ALLOWED or t.split(" WITH ")[0] in ALLOWED

    def conj():
        nonlocal pos
        v = term()
        while pos < len(tokens) and tokens[pos] == "AND":
            pos += 1
            v = term() and v
        return v

    def disj():
        nonlocal pos
        v = conj()
        while pos < len(tokens) and tokens[pos] == "OR":
            pos += 1
            v = conj() or v
        return v

    return disj()


def check_licenses():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--offline"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    bad = []
    for p in json.loads(out)["packages"]:
        lic = p.get("license")
        if p["name"] == "modelgate":
            continue
        if not lic or not spdx_ok(lic):
            bad.append(f"{p['name']} {p['version']}: license {lic!r} is not allowed")
    return bad


def main():
    args = sys.argv[1:]
    packages = lock_packages()
    names = sorted({p["name"] for p in packages})
    if args[:1] == ["--refresh"]:
        db = args[1]
        shutil.rmtree(SNAPSHOT, ignore_errors=True)
        os.makedirs(os.path.join(SNAPSHOT, "crates"))
        for n in names:
            src = os.path.join(db, "crates", n)
            if not os.path.isdir(src):
                continue
            os.makedirs(os.path.join(SNAPSHOT, "crates", n))
            for name in sorted(os.listdir(src)):
                a = advisory(os.path.join(src, name))
                if a:
                    out = os.path.join(SNAPSHOT, "crates", n, name.replace(".md", ".toml"))
                    with open(out, "w") as f:
                        f.write(slim(a))
        with open(os.path.join(SNAPSHOT, "crates.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
        for extra in ("SNAPSHOT.txt", "LICENSE.txt"):
            if os.path.exists(os.path.join(db, extra)):
                shutil.copy(os.path.join(db, extra), SNAPSHOT)
        print(f"snapshot refreshed for {len(names)} crates")
        return 0

    failures = []
    for p in packages:
        src = p.get("source")
        if src and not src.startswith("registry+"):
            failures.append(f"{p['name']} {p['version']}: not from the registry ({src.split('+')[0]})")

    db = args[1] if args[:1] == ["--db"] else os.environ.get("MODELGATE_ADVISORY_DB") or SNAPSHOT
    if db == SNAPSHOT:
        with open(os.path.join(SNAPSHOT, "crates.txt")) as f:
            covered = set(f.read().split())
        new = [n for n in names if n not in covered]
        if new:
            failures.append(
                f"crates added since the advisory snapshot was refreshed: {', '.join(new)}; "
                "run .ci/audit.py --refresh with a copy of the RustSec advisory database"
            )
    vulns, warns = check_advisories(db, packages)
    failures += vulns
    failures += check_licenses()
    for w in warns:
        print(f"warning: {w}")
    for f in failures:
        print(f"error: {f}")
    print(f"{len(packages)} crates checked: {len(vulns)} vulnerabilities, {len(warns)} warnings, "
          f"{len(failures) - len(vulns)} other problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
