"""What code a computation runs, found from the source alone, and a digest of what that code means.

One list serves both a run's key and dvc.yaml's code deps: `closure(entry)` follows every `import` of the
project's modules from `entry` (module-level and inside functions alike, so a lazily imported module counts),
and `meaning_digest(file)` hashes a module's syntax tree without its docstrings — comments never reach the
tree — so editing a comment or a docstring re-keys nothing, while any change to executed code re-keys
exactly the runs whose closure holds that module.

Knowable before anything trains and independent of what the calling process happened to import (the same
run has the same key from `dvc repro`, `zsl-bench sweep` or a test). Standard library only: every stage
and `--help` may import it.
"""
from __future__ import annotations

import ast
import hashlib
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The project's import names and the folders they live in (pyproject.toml's package-dir says the same).
PACKAGES = {"zsl_bench": "zsl_bench", "zsl_bench_methods": "methods", "zsl_bench_pipelines": "pipelines"}

# Modules a run imports that never shape its trained models or its recorded traces: they only read the
# traces (a policy picks a checkpoint from them; `policies.evaluate` re-reads every record with the current
# policies). Leaving them out of a run's key means a new or changed policy retrains nothing.
READS_TRACES_ONLY = ("zsl_bench.policies",)


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package: its __init__.py), or None when `name` is not one."""
    top, *rest = name.split(".")
    if top not in PACKAGES:
        return None
    base = ROOT / PACKAGES[top] / Path(*rest) if rest else ROOT / PACKAGES[top]
    if base.with_suffix(".py").is_file() and rest:
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(path: Path) -> str | None:
    """The import name of a project source file (the inverse of `module_file`), or None."""
    path = Path(path).resolve()
    for top, folder in PACKAGES.items():
        base = ROOT / folder
        if path.is_relative_to(base):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join([top, *parts])
    return None


def _is_package(name: str) -> bool:
    f = module_file(name)
    return f is not None and f.name == "__init__.py"


def _stamp(path: Path) -> tuple:
    """A file's identity for the caches below: an edited file is read again (a long-lived process, a notebook)."""
    s = Path(path).stat()
    return str(path), s.st_mtime_ns, s.st_size


def _tree(path: Path) -> ast.Module:
    return _parsed(_stamp(path))


@lru_cache(maxsize=None)
def _parsed(stamp: tuple) -> ast.Module:
    return ast.parse(Path(stamp[0]).read_text(encoding="utf-8"), filename=stamp[0])


def direct_imports(name: str, path: Path | None = None) -> set[str]:
    """The project modules `name` imports anywhere in its source, with the packages whose __init__ runs
    first. A package that loads its own modules by name (`importlib.import_module(f"{__name__}.…")`, as
    zsl_bench.data does for its sources) imports all of them."""
    path = path or module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}"))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(node.args[0]))):
            found.update(submodules(package))
    out = set()
    for m in found:
        parts = m.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))   # parents' __init__ run first
    return {m for m in out if module_file(m) and m != name}


def submodules(package: str) -> list[str]:
    folder = module_file(package).parent
    return sorted(n for p in folder.rglob("*.py") if "__pycache__" not in p.parts and (n := module_name(p)))


def closure(*entries: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Every project module that importing and running `entries` can load, sorted; the modules in `skip`
    are left out and not followed."""
    seen, todo = set(), [e for e in entries if e not in skip]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(d for d in direct_imports(m) if d not in seen and d not in skip)
    return sorted(seen)


class _DropDocstrings(ast.NodeTransformer):
    def generic_visit(self, node):
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
        return node


def _canonical(node) -> str:
    """The tree as text: node types and fields, without positions, and without fields that are empty (so the
    same source gives the same text on the Python versions that add empty fields, e.g. 3.12's type_params)."""
    if isinstance(node, ast.AST):
        fields = [(k, _canonical(v)) for k, v in ast.iter_fields(node) if v not in (None, [])]
        return f"{type(node).__name__}({','.join(f'{k}={v}' for k, v in fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(x) for x in node) + "]"
    return repr(node)


def meaning_digest(path: Path) -> str:
    """A digest of what a Python file does: its syntax tree without docstrings or comments."""
    return _digest(_stamp(path))


@lru_cache(maxsize=None)
def _digest(stamp: tuple) -> str:
    tree = _DropDocstrings().visit(ast.parse(Path(stamp[0]).read_text(encoding="utf-8")))
    return hashlib.sha256(_canonical(tree).encode()).hexdigest()[:16]


def relative(path: Path) -> str:
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def files_of(modules) -> list[str]:
    return sorted(relative(module_file(m)) for m in modules)


def run_modules(method_module: str) -> list[str]:
    """The project modules a run of the method defined in `method_module` loads: the run machinery
    (`zsl_bench.runner` and what it imports) and the method's own imports, less READS_TRACES_ONLY."""
    return closure("zsl_bench.runner", *([method_module] if module_file(method_module) else []),
                   skip=READS_TRACES_ONLY)


def run_code(method_cls) -> dict:
    """What a run's key knows of the code: the harness version and, per module the run loads, its meaning
    digest (a plugin outside the project: its own file or package folder, by meaning too)."""
    from zsl_bench import __version__

    name = method_cls.__module__
    modules = {relative(module_file(m)): meaning_digest(module_file(m)) for m in run_modules(name)}
    if module_file(name) is None:   # a third-party plugin: its own source files
        file = Path(sys.modules[name].__file__).resolve()
        files = [file] if file.name != "__init__.py" else sorted(
            p for p in file.parent.rglob("*.py") if "__pycache__" not in p.parts)
        modules.update({relative(p): meaning_digest(p) for p in files})
    return {"harness": __version__, "modules": dict(sorted(modules.items()))}


def changed_modules(old: dict, new: dict) -> list[str]:
    """Which files differ between two `run_code` results (added, removed or changed)."""
    a, b = old.get("modules", {}), new.get("modules", {})
    return sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))


def stage_code(stage_module: str) -> list[str]:
    """The project files a compute stage that runs methods (train, ablate) executes: the static closure of its
    entry module and of every registered method shipped here, less READS_TRACES_ONLY; the methods' own files
    are dvc.yaml's `methods` folder. dvc.yaml lists exactly these (a test checks), so the stage's deps and
    its runs' keys come from the same function."""
    methods = submodules("zsl_bench_methods")
    return [f for f in files_of(closure(stage_module, *methods, skip=READS_TRACES_ONLY))
            if not f.startswith(PACKAGES["zsl_bench_methods"] + "/")]
