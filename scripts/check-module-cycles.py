#!/usr/bin/env python3
"""Fails on an import cycle between the modules of one crate, so each crate stays layered
bottom-up (docs/architecture.md).

A module is one file under a crate's src/ (`src/sstable/table.rs` is `sstable::table`, a
`mod.rs` is its folder's module). Module A depends on module B when A's code outside its
`#[cfg(test)]` part names a path through B: `use crate::b::...`, `crate::b::f()`, or
`super::...` resolved to B. A path names the longest module it reaches (`crate::sstable::Table`
names `sstable`, `crate::sstable::table::Table` names `sstable::table`). Two edges are not
layering and are left out: the crate root (lib.rs, which declares and re-exports everything),
and a module naming its own descendants (a folder module declaring and re-exporting its
parts). Comments are skipped, so a doc link up the layers is allowed.

Usage: check-module-cycles.py [CRATE_DIR ...]   (default: every crate under crates/ with a
src/lib.rs). Prints each cycle found and exits 1, or prints a one-line summary and exits 0.
"""

import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super)((?:::\w+)+)")
USE_RE = re.compile(r"\buse\s+([^;]*);", re.S)


def module_name(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def code_of(text: str) -> str:
    """The file without comments, string literals and its test part."""
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("#[cfg(test)]"):
            break
        line = re.sub(r"//.*", "", line)
        lines.append(line)
    code = "\n".join(lines)
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', code)


def expand_use(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> [`a::b`, `a::c::d`, `a::c::e`]."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return [p for item in items if item for p in expand_use(prefix + item)]


def paths_in(code: str) -> list[str]:
    paths = []
    for m in USE_RE.finditer(code):
        paths.extend(expand_use(m.group(1)))
    rest = USE_RE.sub("", code)
    paths.extend(m.group(0) for m in PATH_RE.finditer(rest))
    return paths


def resolve(path: str, me: tuple[str, ...], is_folder: bool, modules: set) -> tuple | None:
    segs = [s for s in path.split("::") if s]
    if not segs or segs[0] not in ("crate", "super"):
        return None
    base: list[str] = []
    if segs[0] == "super":
        # `super` of `a::b` (file a/b.rs) is `a`; of folder module `a` (a/mod.rs) it is the root.
        base = list(me[:-1])
        segs = segs[1:]
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
    else:
        segs = segs[1:]
    full = base + [s.split(" as ")[0] for s in segs]
    for n in range(len(full), 0, -1):
        if tuple(full[:n]) in modules:
            return tuple(full[:n])
    return None


def cycles_of(crate: Path) -> list[list[str]]:
    src = crate / "src"
    files = {module_name(src, f): f for f in src.rglob("*.rs")}
    files.pop(("lib",), None)
    files.pop(("main",), None)
    modules = set(files)
    graph: dict[tuple, set] = {m: set() for m in modules}
    for me, file in files.items():
        is_folder = file.name == "mod.rs"
        for path in paths_in(code_of(file.read_text())):
            target = resolve(path, me, is_folder, modules)
            if target is None or target == me or target[: len(me)] == me:
                continue
            graph[me].add(target)
    # Tarjan's strongly connected components: every component of more than one module is a
    # cycle.
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted("::".join(m) for m in component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    crates = [Path(a) for a in sys.argv[1:]] or sorted(
        p.parent.parent for p in (root / "crates").glob("*/src/lib.rs")
    )
    failed = False
    for crate in crates:
        for cycle in cycles_of(crate):
            failed = True
            print(f"{crate.name}: import cycle between modules: {', '.join(cycle)}")
    if failed:
        print("Each crate is layered bottom-up: move what both sides need below them.")
        return 1
    print(f"module layering: no import cycle in {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
