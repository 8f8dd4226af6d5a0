"""Docstrings stay honest: their ``>>>`` examples run (doctest), and every ``::`` code snippet
imports or defines each name it uses (placeholders are written ``model = ...``)."""

from __future__ import annotations

import ast
import builtins
import doctest
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import rao_envs

PACKAGES = ("rao_envs", "rao_envs.envs", "rao_envs.sandboxes")
OPTIONAL = ("trl", "torch", "transformers", "ray", "verl", "docker")  # modules whose extra may be absent
IN_BOX_ONLY = {"rao_envs.code_kernel"}  # shipped into the sandbox as source; imports the box's own modules


def _modules() -> list[str]:
    names: list[str] = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".") if not m.name.split(".")[-1].startswith("_")]
    return sorted(set(names))


def _import(name: str):
    if name in IN_BOX_ONLY:
        pytest.skip(f"{name} runs inside the sandbox only")
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # an optional extra (trl, ray, ...) not installed here
        if any(opt in str(exc) for opt in OPTIONAL):
            pytest.skip(f"{name} needs an optional extra: {exc}")
        raise


def _snippets(doc: str) -> list[str]:
    """The literal blocks that follow a line ending in ``::`` (reST), dedented."""
    lines, out, i = doc.splitlines(), [], 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            indent, body, i = len(lines[i]) - len(lines[i].lstrip()), [], i + 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            out.append(textwrap.dedent("\n".join(body)).strip("\n"))
        else:
            i += 1
    return out


def undefined_names(code: str) -> list[str]:
    """Names a snippet reads that it neither imports, assigns, defines nor gets from builtins."""
    tree = ast.parse(code)
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - defined)


def _documented(mod) -> list:
    objs = [mod] + [o for _, o in inspect.getmembers(mod) if (inspect.isclass(o) or inspect.isfunction(o))
                    and getattr(o, "__module__", None) == mod.__name__]
    for cls in [o for o in objs if inspect.isclass(o)]:
        objs += [f for f in vars(cls).values() if inspect.isfunction(f)]
    return objs


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    mod = _import(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) of {name} failed (run python -m doctest -v on it)"


@pytest.mark.parametrize("name", _modules())
def test_docstring_snippets_import_what_they_use(name):
    mod = _import(name)
    bad = []
    for obj in _documented(mod):
        for code in _snippets(inspect.getdoc(obj) or ""):
            try:
                missing = undefined_names(code)
            except SyntaxError:
                continue  # not Python (a shell line, a prompt, a table)
            if missing:
                bad.append(f"{getattr(obj, '__qualname__', name)}: {missing}")
    assert not bad, "docstring snippets use names they never import or define: " + "; ".join(bad)


def test_checker_flags_a_missing_import():
    assert undefined_names("env = gym.make('x')") == ["gym"]
    assert undefined_names("import gymnasium as gym\nenv = gym.make('x')\nmodel = ...") == []
    assert rao_envs  # the package under test imports
