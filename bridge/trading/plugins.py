"""Loads strategy plugins named in the config: an import path or a .py file, an optional class name,
and the params validated into the strategy's `Params` dataclass. Every failure is a ConfigError.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from bridge.config import Config, StrategyConfig, one_line
from bridge.errors import ConfigError
from bridge.schema import SchemaError, build
from bridge.trading.strategy import Strategy


def load_strategies(config: Config) -> list[Strategy]:
    """Instantiate every enabled strategy, or raise ConfigError naming the file, strategy and key."""
    return [load_strategy(s, config.source) for s in config.strategies if s.enabled]


# What a plugin's import or constructor may raise that is the plugin's fault, reported as a config
# error naming it: any Exception, and SystemExit / KeyboardInterrupt raised by plugin code itself (a
# stray sys.exit() or exit() at module level). A real Ctrl-C arrives as a signal handled elsewhere.
PLUGIN_FAILURES = (Exception, SystemExit, KeyboardInterrupt)


def load_strategy(spec: StrategyConfig, source: str = "<config>") -> Strategy:
    where = f"{source}: strategies[{spec.name}]"
    module = _import(spec.module, where)
    cls = _pick_class(module, spec, where)
    params: object = dict(spec.params)
    if cls.Params is not None:
        if not dataclasses.is_dataclass(cls.Params):
            raise ConfigError(f"{where}: {cls.__name__}.Params must be a dataclass")
        try:
            params = build(cls.Params, spec.params, key="params")
        except SchemaError as exc:
            raise ConfigError(one_line(f"{where}.{exc}")) from None
        except PLUGIN_FAILURES as exc:  # the plugin's own __post_init__ may raise anything
            raise ConfigError(
                one_line(f"{where}.params: {cls.__name__}.Params rejected them: {_what(exc)}")
            ) from None
    try:
        return cls(spec.name, params)
    except PLUGIN_FAILURES as exc:  # plugin constructor: its failure is reported as config
        raise ConfigError(one_line(f"{where}: {cls.__name__}() failed: {_what(exc)}")) from None


def _what(exc: BaseException) -> str:
    """A plugin's exception as `Type: message`, shortened: its text is the plugin's, not ours."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _import(name: str, where: str) -> ModuleType:
    if name.endswith(".py") or "/" in name:
        return _import_file(Path(name), where)
    # Import paths are relative to the working directory, as `python -m` would see them.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except PLUGIN_FAILURES as exc:  # plugin code may raise anything at import time
        raise ConfigError(one_line(f"{where}.module: cannot import {name}: {_what(exc)}")) from None


def _import_file(path: Path, where: str) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"{where}.module: no such file {path}")
    mod_name = f"bridge_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}.module: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except PLUGIN_FAILURES as exc:  # plugin code may raise anything at import time
        del sys.modules[mod_name]
        raise ConfigError(one_line(f"{where}.module: cannot import {path}: {_what(exc)}")) from None
    return module


def _pick_class(module: ModuleType, spec: StrategyConfig, where: str) -> type[Strategy]:
    if spec.class_ is not None:
        cls = getattr(module, spec.class_, None)
        if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
            raise ConfigError(f"{where}.class: {spec.module} has no Strategy subclass {spec.class_}")
        return cls
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Strategy) and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ConfigError(
            f"{where}: {spec.module} must define exactly one Strategy subclass, or name one with"
            f" class: (found: {names})"
        )
    return found[0]
