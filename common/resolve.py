"""One name resolver for the three registries: methods (`distill`), models (`model`, `model_s`,
`model_t`) and data sets (`dataset`).

A name is, in this order:
1. a built-in name of the registry (a plain dict);
2. `package.module:Attribute`, imported from the working directory, the folders of the
   `plugin_path` key, or any installed package;
3. a name that an installed package registers in the registry's entry-point group
   (`askd.methods`, `askd.models`, `askd.datasets`), e.g. in its pyproject.toml:
   `[project.entry-points."askd.methods"] mykd = "my_method.method:MyKD"`.
An entry point that takes a built-in name is refused (it would shadow it). Whatever is loaded is
checked by the registry's `accept(obj) -> None | reason`, and its origin (the import path, the
source file and the sha256 of that file) is returned so that a run can record what it ran.
"""
import difflib
import hashlib
import importlib
import importlib.metadata
import os
import sys

from .errors import UserError

GROUPS = {"method": "askd.methods", "model": "askd.models", "dataset": "askd.datasets"}


def add_plugin_paths(plugin_path=""):
    """Put the working directory and each folder of `plugin_path` (the config key: comma-separated,
    relative to the working directory) on sys.path, first."""
    paths = [p for p in str(plugin_path or "").split(",") if p.strip()]
    for path in reversed([os.getcwd(), *paths]):
        path = os.path.abspath(path)
        if path not in sys.path:
            sys.path.insert(0, path)


def entry_points(kind):
    """{name: entry point} of the installed packages' group for `kind`."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUPS[kind])}


def resolve(name, builtins, kind, accept, key=None):
    """(object, origin) of `name` in a registry of `kind` ('method', 'model', 'dataset');
    origin is None for a built-in, else {"import", "file", "sha256"}. `key`: the config key
    that named it, for the error lines. UserError (one line) when it cannot be had."""
    where = f" for '{key}'" if key else ""
    plugins = entry_points(kind)
    if name in builtins:
        if name in plugins:
            raise UserError(f"the package {_package(plugins[name])} registers a {kind} '{name}' "
                            f"(entry-point group {GROUPS[kind]}), which shadows the built-in {kind} "
                            f"'{name}': rename it in that package")
        return builtins[name], None
    if ":" in name:
        target = name
    elif name in plugins:
        target = plugins[name].value
    else:
        close = difflib.get_close_matches(name, [*builtins, *plugins], n=1, cutoff=0.4)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown {kind} '{name}'{where}{hint}; valid: {', '.join([*builtins, *plugins])}, "
                        f"or PACKAGE.MODULE:NAME of your own")
    obj, module = _import(target, kind, where)
    reason = accept(obj)
    if reason:
        via = f" ({target})" if target != name else ""
        raise UserError(f"{kind} '{name}'{where}{via} is {reason}")
    return obj, origin(target, module)


def _package(ep):
    return ep.dist.name if getattr(ep, "dist", None) else ep.value


def _import(target, kind, where):
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UserError(f"{kind} '{target}'{where} must read PACKAGE.MODULE:NAME")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"cannot import {module_name} for the {kind} '{target}'{where} ({e}): run from "
                        f"the folder that holds it, add its folder to plugin_path, or pip install "
                        f"its package") from None
    except Exception as e:  # a plugin's own bug: name it in one line, it is not ours to trace
        raise UserError(f"importing {module_name} for the {kind} '{target}'{where} failed: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        obj = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise UserError(f"module {module_name} ({module.__file__}) has no '{attribute}' for the "
                        f"{kind} '{target}'{where}") from None
    return obj, module


def origin(target, module):
    """{"import": target, "file": the module's source file, "sha256": of that file's bytes}."""
    path = module.__file__
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"import": target, "file": os.path.abspath(path), "sha256": digest}
