#!/usr/bin/env python3
"""Check that a Rust crate's imports run one way: no cycle between its files,
and no file importing from a layer above its own.

    python3 tests/layers.py [SRC_DIR] [--layers FILE] [--graph]

An edge A -> B means a file A names an item (a type, function, constant,
trait, ...) that is *defined* in file B, through `use` or a path written in
the code (`crate::x::Y`, `super::Y`, an imported module's `m::Y`). Re-exports
are followed to the file that defines the item, so a folder's `mod.rs` that
only declares and re-exports never stands between two files. Declaring a
module (`mod x;`) is not an edge; `#[cfg(test)]` items are left out (unit
tests may build on anything above them).

Layers come from FILE (default: `layers.toml` beside SRC_DIR's crate, i.e.
host/layers.toml): `[[layer]]` tables from the bottom up, each with
`modules = ["config", "backend", ...]` (top-level modules of src/). A file
may use its own layer and those below; every top-level module must have a
layer. Exit status 1 on a cycle, an upward import or an unlisted module,
with each one printed; 0 otherwise. `--graph` prints the edges.

This is a source scanner, not a compiler: it understands `use` trees (groups,
`self`, `as`, globs), `mod` declarations (files and inline), `pub use`
re-exports and paths in code, which is what Coffer's code uses; it does not
follow `#[path]` attributes or `include!`. A path it cannot resolve (an
external crate) is no edge; a name a macro defines at module level (a
`bindgen!`) counts as that file's.
"""
import argparse
import os
import re
import sys
import tomllib

ITEM_KEYWORDS = {"fn", "struct", "enum", "trait", "type", "const", "static", "union"}
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|[{}();,#\[\]*!<>]|\S")


def strip(text):
    """The source without comments, string, byte-string and character literals."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif re.match(r'b?r(#*)"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"' or (c == "b" and text.startswith('b"', i) and (i == 0 or not text[i - 1].isalnum())):
            i += 2 if c == "b" else 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'":
            # A character literal ('x', '\n', '\u{..}'), or a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                i += m.end()
                out.append("' '")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Module:
    def __init__(self, path, file):
        self.path, self.file = path, file
        self.items, self.children = set(), set()
        self.aliases = {}  # local name -> (module path the `use` is in, segments)
        self.globs = []  # (module path, segments)
        self.refs = []  # (module path, segments, is_glob)
        self.macro_items = False  # a macro at module level (bindgen!) defines items unseen here


def parse_use_tree(tokens, i, prefix, out):
    """Parse a use tree at tokens[i]; append (segments, alias or None, glob) to out; return the index after it."""
    segs = list(prefix)
    while i < len(tokens):
        t = tokens[i]
        if t == "{":
            i += 1
            while tokens[i] != "}":
                i = parse_use_tree(tokens, i, segs, out)
                if tokens[i] == ",":
                    i += 1
            return i + 1
        if t == "*":
            out.append((segs, None, True))
            return i + 1
        if t == "::":
            i += 1
            continue
        segs.append(t)
        i += 1
        if i < len(tokens) and tokens[i] == "as":
            out.append((segs, tokens[i + 1], False))
            return i + 2
        if i >= len(tokens) or tokens[i] in (",", "}", ";"):
            if segs[-1] == "self":
                segs = segs[:-1]
                out.append((segs, segs[-1] if segs else None, False))
            else:
                out.append((segs, segs[-1], False))
            return i
    return i


def item_end(tokens, i, open_, close, stop=None):
    """The index of the token that closes what starts at `i`: the `close`
    matching the first `open_`, or a `stop` met outside any."""
    depth = 0
    for k in range(i, len(tokens)):
        if tokens[k] == open_:
            depth += 1
        elif tokens[k] == close:
            depth -= 1
            if depth == 0:
                return k
        elif tokens[k] == stop and depth == 0:
            return k
    return len(tokens)


def scan_file(file, modpath, modules):
    tokens = TOKEN.findall(strip(open(file, encoding="utf-8").read()))
    # A stack of (module or None for a plain block).
    stack = [modules[modpath]]
    attrs_test = False
    i = 0
    while i < len(tokens):
        t = tokens[i]
        mod = next(m for m in reversed(stack) if m is not None)
        at_module_level = stack[-1] is not None
        if t == "#" and i + 1 < len(tokens) and tokens[i + 1] in ("[", "!"):
            j = i + 1 if tokens[i + 1] == "[" else i + 2
            k = item_end(tokens, j, "[", "]")
            attr = " ".join(tokens[j:k + 1])
            if at_module_level and re.fullmatch(r"\[ cfg \( test \) \]", attr):
                attrs_test = True
            i = k + 1
            continue
        if at_module_level and attrs_test and t not in ("pub", "(", "crate", ")", "super", "in"):
            # Skip the whole #[cfg(test)] item.
            attrs_test = False
            i = item_end(tokens, i, "{", "}", stop=";") + 1
            continue
        if t == "use":
            found = []
            i = parse_use_tree(tokens, i + 1, [], found)
            for segs, alias, glob in found:
                if segs and segs[0] == "::":
                    continue
                if glob:
                    mod.globs.append((mod.path, segs))
                elif alias and alias != "_":
                    mod.aliases[alias] = (mod.path, segs)
                mod.refs.append((mod.path, segs, glob))
            continue
        if t == "mod" and i + 2 < len(tokens) and at_module_level:
            name = tokens[i + 1]
            child = mod.path + (name,)
            mod.children.add(name)
            if tokens[i + 2] == ";":
                base = os.path.dirname(file)
                own = os.path.basename(file)[:-3]
                folder = base if own in ("mod", "lib", "main") else os.path.join(base, own)
                for cand in (os.path.join(folder, name + ".rs"), os.path.join(folder, name, "mod.rs")):
                    if os.path.exists(cand):
                        modules[child] = Module(child, cand)
                        scan_file(cand, child, modules)
                        break
                i += 3
                continue
            if tokens[i + 2] == "{":
                modules[child] = Module(child, file)
                stack.append(modules[child])
                i += 3
                continue
        if at_module_level and t in ITEM_KEYWORDS and i + 1 < len(tokens):
            name = tokens[i + 1]
            if not (t == "const" and name in ("fn", "unsafe", "async")) and re.match(r"[A-Za-z_]", name):
                mod.items.add(name)
        if at_module_level and t == "macro_rules" and tokens[i + 1] == "!":
            mod.items.add(tokens[i + 2])
        elif at_module_level and re.match(r"[A-Za-z_]", t) and tokens[i + 1 : i + 3] in (["!", "{"], ["!", "("]):
            mod.macro_items = True
        if t == "{":
            stack.append(None)
        elif t == "}":
            stack.pop()
        elif re.match(r"[A-Za-z_]", t) and i + 1 < len(tokens) and tokens[i + 1] == "::" and (i == 0 or tokens[i - 1] != "::"):
            segs, k = [t], i + 1
            while k + 1 < len(tokens) and tokens[k] == "::" and re.match(r"[A-Za-z_]", tokens[k + 1]):
                segs.append(tokens[k + 1])
                k += 2
            mod.refs.append((mod.path, segs, False))
            i = k
            continue
        i += 1


def build(src):
    modules = {(): Module((), os.path.join(src, "lib.rs"))}
    scan_file(os.path.join(src, "lib.rs"), (), modules)
    return modules


def resolve(modules, at, segs, seen=None):
    """The file defining what `segs` names from module `at`, or None (external, or a module itself)."""
    seen = set() if seen is None else seen
    key = (at, tuple(segs))
    if key in seen or not segs:
        return None
    seen.add(key)
    cur, i = at, 0
    if segs[0] == "crate":
        cur, i = (), 1
    elif segs[0] == "self":
        i = 1
    elif segs[0] == "super":
        while i < len(segs) and segs[i] == "super":
            cur, i = cur[:-1], i + 1
    else:
        m = modules[cur]
        if segs[0] not in m.children and segs[0] not in m.items and segs[0] not in m.aliases:
            return None  # an external crate, a primitive, a generic parameter...
        if segs[0] in m.aliases and m.aliases[segs[0]][1][:1] == [segs[0]] and segs[0] not in m.children:
            return None  # `use some_crate::some_crate;`: the name is the external crate's
    while i < len(segs):
        m, s = modules[cur], segs[i]
        if s in m.children:
            cur, i = cur + (s,), i + 1
            continue
        if s in m.items:
            return m.file
        if s in m.aliases:
            base, target = m.aliases[s]
            return resolve(modules, base, list(target) + list(segs[i + 1:]), seen)
        for base, target in m.globs:
            found = resolve(modules, base, list(target) + list(segs[i:]), seen)
            if found:
                return found
        return m.file if m.macro_items else None
    return None  # names a module: what is used through it is what counts


def edges_of(modules):
    edges = {}
    for m in modules.values():
        out = edges.setdefault(m.file, set())
        for at, segs, glob in m.refs:
            target = None
            if glob:
                # Everything a glob brings: the module's own file.
                cur = resolve_module(modules, at, segs)
                target = modules[cur].file if cur is not None else None
            else:
                target = resolve(modules, at, segs)
            if target and target != m.file:
                out.add(target)
    return edges


def resolve_module(modules, at, segs):
    cur, i = at, 0
    if segs and segs[0] == "crate":
        cur, i = (), 1
    while i < len(segs) and segs[i] in ("super", "self"):
        cur, i = (cur[:-1] if segs[i] == "super" else cur), i + 1
    for s in segs[i:]:
        if s not in modules[cur].children:
            return None
        cur = cur + (s,)
    return cur


def cycles(edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(100000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv):
    parser = argparse.ArgumentParser(description="Check that a crate's imports run one way.")
    parser.add_argument("src", nargs="?", default="host/src")
    parser.add_argument("--layers", help="the layers file (default: layers.toml beside SRC)")
    parser.add_argument("--graph", action="store_true", help="print the edges")
    opts = parser.parse_args(argv)
    src = opts.src
    layers_file = opts.layers or os.path.join(os.path.dirname(os.path.normpath(src)), "layers.toml")
    modules = build(src)
    edges = edges_of(modules)
    rel = lambda f: os.path.relpath(f, src)
    problems = []

    if opts.graph:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{rel(a)} -> {rel(b)}")

    for comp in cycles(edges):
        ties = [f"{rel(a)} -> {rel(b)}" for a in comp for b in sorted(edges[a]) if b in comp]
        problems.append(f"cycle between files: {', '.join(rel(f) for f in comp)}\n    " + "\n    ".join(ties))

    with open(layers_file, "rb") as f:
        layers = tomllib.load(f)["layer"]
    rank = {}
    for r, layer in enumerate(layers):
        for name in layer["modules"]:
            rank[name] = (r, layer.get("name", str(r)))

    def top(file):
        parts = rel(file).split(os.sep)
        return parts[0][:-3] if parts[0].endswith(".rs") else parts[0]

    for m in sorted({top(m.file) for m in modules.values()} - {"lib"}):
        if m not in rank:
            problems.append(f"module {m} has no layer in {layers_file}")
    for a in sorted(edges):
        for b in sorted(edges[a]):
            ta, tb = top(a), top(b)
            if ta == "lib" or ta not in rank or tb not in rank:
                continue
            if rank[tb][0] > rank[ta][0]:
                problems.append(
                    f"upward import: {rel(a)} ({ta}, layer {rank[ta][1]}) uses {rel(b)} ({tb}, layer {rank[tb][1]})"
                )
    for p in problems:
        print(p)
    if not problems:
        print(f"{len(edges)} files, {sum(map(len, edges.values()))} imports between them: one way, no cycle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
