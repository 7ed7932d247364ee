"""Method registry: `@register_method("name")`, plus the entry-point group `zsl_bench.methods`.

Methods are found by name through entry points (this package's own in pyproject.toml, and any
installed third-party package's), imported only when asked for, so `zsl-bench --help` stays fast.
"""
from __future__ import annotations

import warnings
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "zsl_bench.methods"
_REGISTRY: dict[str, type] = {}


def register_method(name: str):
    def decorator(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            warnings.warn(f"method {name!r} registered twice; the later definition wins", stacklevel=2)
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorator


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_methods() -> list[str]:
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_method(name: str) -> type:
    """A method class by name; `base.variant` (e.g. `mgmrn.levels1`) gives one of its named variants."""
    if "." in name and name not in _REGISTRY:
        base, variant = name.split(".", 1)
        _REGISTRY[name] = get_method(base).with_variant(variant)
    if name not in _REGISTRY:
        ep = _entry_points().get(name)
        if ep is None:
            raise KeyError(f"unknown method {name!r}; available: {', '.join(available_methods()) or 'none'}")
        cls = ep.load()
        _REGISTRY.setdefault(name, cls)
    return _REGISTRY[name]
