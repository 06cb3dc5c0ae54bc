"""Which clipva code a script runs, and a hash of it: the cache key of the results the script computes.

The modules are found, not listed: the transitive closure of the clipva imports of the script, read with
`ast` (every import statement, also those inside functions; absolute and relative). A module that the script
reaches is hashed; one it cannot reach is not, so editing it leaves that script's results up to date.
Importing a submodule runs its packages' `__init__` too, so the package itself belongs to every closure.

Only the standard library: the workflow hashes code while it is parsed, on every call.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "clipva"
SRC = Path(__file__).resolve().parents[1]  # the folder that holds this clipva package


def module_file(name: str, src: Path = SRC) -> Path | None:
    """The source file of module `name` (dotted) under `src`, or None if it is no module there."""
    base = src.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _statements(body: list[ast.stmt]):
    """Every statement in `body`, nested ones too (in functions, classes, if/try/with/for/match blocks): an
    import is a statement, so expressions need not be visited (ast.walk visits some 13 times more nodes)."""
    todo = list(body)
    while todo:
        node = todo.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                todo.extend(block)


@functools.lru_cache(maxsize=512)
def _imports(source: bytes, package: str | None) -> frozenset[str]:
    """The dotted names a module's source imports (with `from m import n`, both m and m.n: n may be a
    submodule); relative imports resolved against `package` (None: a top-level script)."""
    found = set()
    for node in _statements(ast.parse(source).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue  # a relative import outside a package fails when it runs
                parts = package.split(".")
                if node.level > len(parts):
                    continue
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return frozenset(found)


def _with_packages(name: str) -> list[str]:
    """`name` and the packages above it: importing a.b.c runs a and a.b first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(script: Path, src: Path = SRC) -> list[str]:
    """The clipva modules (dotted names, sorted) that running `script` can import, directly or through other
    clipva modules, resolved against the package in `src`."""
    seen: set[str] = set()
    todo = [(Path(script).read_bytes(), None)]
    while todo:
        source, package = todo.pop()
        for name in _imports(source, package):
            if name.split(".")[0] != PACKAGE:
                continue
            for module in _with_packages(name):
                path = None if module in seen else module_file(module, src)
                if path is None:
                    continue  # seen, or no module: an attribute (from clipva.x import f), or not there
                seen.add(module)
                is_package = path.name == "__init__.py"
                todo.append((path.read_bytes(), module if is_package else module.rpartition(".")[0]))
    return sorted(seen)


def code_version(script: Path, src: Path = SRC) -> str:
    """A hash of `script` and of every module of its import closure: it changes with any of their bytes."""
    digest = hashlib.sha256()
    parts = [("<script>", Path(script))] + [(m, module_file(m, src)) for m in import_closure(script, src)]
    for name, path in parts:
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:12]
