#!/usr/bin/env python3
"""CycloneDX 1.5 JSON SBOM of the crates shipped in the k8s-job-worker binary.

    scripts/sbom.py [--target TRIPLE] [--out FILE]      (make sbom)

Offline and deterministic: the crate set and the dependency edges are those of
`cargo tree -e normal --target TRIPLE` (the tree the binary is built from: no
build scripts' or tests' dependencies, proc-macros included since their code is
compiled in), names, licenses, descriptions and repositories come from `cargo
metadata`, and the SHA-256 of every registry package from Cargo.lock. The same
Cargo.lock and target always give the same bytes (the timestamp is the last
commit's, or SOURCE_DATE_EPOCH). Standard library only; no network.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARGO = os.environ.get("CARGO", "cargo")


def run(*args):
    return subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def spdx(expr):
    """Cargo's license field as an SPDX expression (the old `A/B` means `A OR B`)."""
    if not expr:
        return None
    expr = expr.strip()
    if "/" in expr and " " not in expr:
        expr = " OR ".join(p.strip() for p in expr.split("/"))
    return expr


def purl(name, version):
    return f"pkg:cargo/{name}@{version}"


def tree(target):
    """(root key, set of (name, version), edges) from cargo tree's depth-prefixed output."""
    out = run(CARGO, "tree", "--locked", "--offline", "-e", "normal", "--target", target,
              "--prefix", "depth", "--no-dedupe", "-f", "{p}")
    stack, nodes, edges, root = [], set(), set(), None
    for line in out.splitlines():
        m = re.match(r"^(\d+)(\S+) v(\S+)", line)
        if not m:
            continue
        depth, key = int(m.group(1)), (m.group(2), m.group(3))
        del stack[depth:]
        if depth == 0:
            root = key
        else:
            edges.add((stack[-1], key))
        nodes.add(key)
        stack.append(key)
    if root is None:
        sys.exit("sbom: cargo tree printed no root package")
    return root, nodes, edges


def lock_checksums(path):
    """{(name, version): sha256} of Cargo.lock's [[package]] entries (a flat TOML subset)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for block in f.read().split("[[package]]")[1:]:
            field = dict(re.findall(r'^(name|version|checksum) = "([^"]*)"$', block, re.M))
            out[(field.get("name"), field.get("version"))] = field.get("checksum")
    return out


def epoch():
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        return int(run("git", "log", "-1", "--format=%ct").strip())
    except (subprocess.CalledProcessError, FileNotFoundError, ValueError):
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="x86_64-unknown-linux-musl")
    ap.add_argument("--out", default="-")
    a = ap.parse_args()

    meta = json.loads(run(CARGO, "metadata", "--locked", "--offline", "--format-version", "1",
                          "--filter-platform", a.target))
    by_key = {(p["name"], p["version"]): p for p in meta["packages"]}
    checksum = lock_checksums(os.path.join(ROOT, "Cargo.lock"))

    root, nodes, edges = tree(a.target)

    def component(key, kind):
        p = by_key.get(key)
        if p is None:
            sys.exit(f"sbom: {key[0]} {key[1]} is in cargo tree but not in cargo metadata")
        c = {"type": kind, "bom-ref": purl(*key), "name": key[0], "version": key[1],
             "purl": purl(*key)}
        if p.get("description"):
            c["description"] = " ".join(p["description"].split())
        lic = spdx(p.get("license"))
        if lic:
            c["licenses"] = [{"expression": lic}]
        elif p.get("license_file"):
            c["licenses"] = [{"license": {"name": "see " + os.path.basename(p["license_file"])}}]
        if checksum.get(key):
            c["hashes"] = [{"alg": "SHA-256", "content": checksum[key]}]
        refs = []
        if p.get("repository"):
            refs.append({"type": "vcs", "url": p["repository"]})
        if p.get("homepage"):
            refs.append({"type": "website", "url": p["homepage"]})
        if refs:
            c["externalReferences"] = refs
        return c

    deps = {}
    for parent, child in edges:
        deps.setdefault(parent, set()).add(child)
    lock_digest = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(sorted(checksum.items(), key=str)))
    serial = uuid.uuid5(lock_digest, f"{root[0]}@{root[1]}/{a.target}")
    ts = datetime.datetime.fromtimestamp(epoch(), datetime.timezone.utc)
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "scripts/sbom.py",
                                      "description": "cargo tree -e normal + cargo metadata + Cargo.lock"}]},
            "component": component(root, "application"),
            "properties": [{"name": "cargo:target", "value": a.target},
                           {"name": "cargo:crates", "value": str(len(nodes))}],
        },
        "components": [component(k, "library") for k in sorted(nodes - {root})],
        "dependencies": [{"ref": purl(*k), "dependsOn": sorted(purl(*d) for d in deps.get(k, ()))}
                         for k in sorted(nodes)],
    }
    text = json.dumps(bom, indent=2, ensure_ascii=False) + "\n"
    if a.out == "-":
        sys.stdout.write(text)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        tmp = a.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, a.out)
        print(f"sbom: {a.out}: {len(nodes) - 1} crates + {root[0]} {root[1]} ({a.target})",
              file=sys.stderr)


if __name__ == "__main__":
    main()
