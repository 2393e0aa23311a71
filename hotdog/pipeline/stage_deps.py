"""The project code each DVC stage runs, from its imports: ``python -m hotdog.pipeline.stage_deps``.

A stage must list as dependencies exactly the ``hotdog`` modules its command runs, so that
touching one of them makes ``dvc status`` report the stage, and nothing else does. This module
derives that list statically (with :mod:`ast`, nothing is imported): it starts from the module the
command runs (``python -m hotdog.x``) and the ``hotdog`` classes a Hydra config names
(``_target_``), and follows every ``import`` of project code, including imports inside functions
and names that a package resolves lazily (declared under ``if TYPE_CHECKING:``). It prints the
lists (exit 1 when ``dvc.yaml`` differs; ``--write`` puts them into ``dvc.yaml``), and
``tests/test_pipeline.py`` fails when they differ.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

PACKAGE = "hotdog"
ROOT = Path(__file__).resolve().parents[2]
_ENTRY = re.compile(rf"\bpython\s+-m\s+({PACKAGE}(?:\.\w+)*)")
_PARAMS_CONFIG = re.compile(r"--config-name\s+params\b")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of module ``name`` under ``root`` (a package's ``__init__.py``), if any."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: all of them but the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _lazy_exports(package: str, root: Path) -> dict[str, str]:
    """Names a package's ``__init__`` declares for type checkers only (resolved at run time by a
    module ``__getattr__``): name -> the module that defines it."""
    path = module_file(package, root)
    if path is None or path.name != "__init__.py":
        return {}
    exports: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                if isinstance(child, ast.ImportFrom):
                    source = _absolute(child, package, is_package=True)
                    exports.update({alias.name: source for alias in child.names})
    return exports


def _direct_imports(module: str, root: Path) -> set[str]:
    """The project modules ``module`` imports when it runs, and the ones a lazy name needs."""
    path = module_file(module, root)
    if path is None:
        return set()
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            found.add(source)
            lazy = _lazy_exports(source, root)
            for alias in node.names:
                found.add(lazy.get(alias.name, f"{source}.{alias.name}"))
    return {name for name in found if name.split(".")[0] == PACKAGE and module_file(name, root)}


def _with_parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def imported_modules(entries: Iterable[str], root: Path = ROOT) -> set[str]:
    """Every project module that running ``entries`` imports, their packages included."""
    pending = [parent for entry in entries for parent in _with_parents(entry)]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen or module_file(module, root) is None:
            continue
        seen.add(module)
        for found in _direct_imports(module, root):
            pending.extend(_with_parents(found))
    return seen


def _targets(config: Any) -> Iterator[str]:
    """The ``_target_`` values in a config tree."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(config, list):
        for value in config:
            yield from _targets(value)


def _target_module(target: str, root: Path) -> str | None:
    """The module part of a dotted ``_target_`` (``hotdog.models.HotdogClassifier``)."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if module_file(name, root):
            lazy = _lazy_exports(name, root)
            return lazy.get(parts[end], name) if end < len(parts) else name
    return None


def stage_entries(command: str, params: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """The modules a stage's command starts: its ``-m`` module, and the project classes of its
    Hydra config when it composes ``params.yaml`` (only the sections the stage declares)."""
    entries = _ENTRY.findall(command)
    if _PARAMS_CONFIG.search(command):
        for key in keys:
            entries += [t for t in _targets(params.get(key)) if t.split(".")[0] == PACKAGE]
    return entries


def stage_code(stage: dict[str, Any], params: dict[str, Any], root: Path = ROOT) -> list[str]:
    """The project files a stage of ``dvc.yaml`` runs, as paths relative to ``root``."""
    keys = [key for key in stage.get("params", []) if isinstance(key, str)]
    modules: set[str] = set()
    for entry in stage_entries(" ".join(str(stage.get("cmd", "")).split()), params, keys):
        module = _target_module(entry, root) if module_file(entry, root) is None else entry
        if module:
            modules.add(module)
    files = {module_file(name, root) for name in imported_modules(modules, root)}
    return sorted(path.relative_to(root).as_posix() for path in files if path)


def declared_code(stage: dict[str, Any]) -> list[str]:
    """The project paths a stage of ``dvc.yaml`` lists among its dependencies."""
    deps = [str(dep) for dep in stage.get("deps", [])]
    return sorted(dep for dep in deps if dep.split("/")[0] == PACKAGE)


def load_pipeline(root: Path = ROOT) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stages of ``dvc.yaml`` and the parameters of ``params.yaml``."""
    import yaml

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params_file = root / "params.yaml"
    params = yaml.safe_load(params_file.read_text()) if params_file.is_file() else {}
    return stages, params


def write_dvc_yaml(root: Path = ROOT) -> None:
    """Replace the project code each stage of ``root/dvc.yaml`` lists by the derived list,
    keeping every other line (comments, data dependencies, order) as it is."""
    stages, params = load_pipeline(root)
    lines = (root / "dvc.yaml").read_text().splitlines()
    out: list[str] = []
    stage, in_deps, written = "", False, False
    for line in lines:
        text = line.strip()
        if line.startswith("  ") and not line.startswith("   ") and text.endswith(":"):
            stage = text[:-1]
        if text == "deps:":
            in_deps, written = True, False
        elif in_deps and text.startswith("- "):
            if text[2:].split("/")[0] == PACKAGE:
                if not written:
                    indent = line[: len(line) - len(line.lstrip())]
                    out += [f"{indent}- {path}" for path in stage_code(stages[stage], params, root)]
                    written = True
                continue
        else:
            in_deps = False
        out.append(line)
    (root / "dvc.yaml").write_text("\n".join(out) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotdog-stage-deps", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--write", action="store_true", help="update dvc.yaml's code deps")
    args = parser.parse_args(argv)
    if args.write:
        write_dvc_yaml(args.repo)
    stages, params = load_pipeline(args.repo)
    differs = False
    for name, stage in stages.items():
        derived = stage_code(stage, params, args.repo)
        declared = declared_code(stage)
        differs |= derived != declared
        mark = "" if derived == declared else "  # dvc.yaml differs"
        print(f"{name}:{mark}")
        print("".join(f"  - {path}\n" for path in derived), end="")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
