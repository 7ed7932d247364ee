"""Method registry: methods are found by their entry point in the group `zsl_bench.methods` (this
package's own in pyproject.toml, and any installed third-party package's), imported only when asked
for, so `zsl-bench --help` stays fast. The entry point's name is the method's name: one place.

`register_method(name)` registers a class directly (for code that is not installed as a package, such
as tests). A method's published numbers, if any, are `published.json` beside its module.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from zsl_bench.io import ConfigError, read_json
from zsl_bench.method import Method

ENTRY_POINT_GROUP = "zsl_bench.methods"
PUBLISHED_FILE = "published.json"
_REGISTRY: dict[str, type[Method]] = {}


def _adopt(name: str, cls) -> type[Method]:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method {name!r}: {cls!r} is not a subclass of zsl_bench.method.Method")
    cls.name = name
    cls.check_declarations()
    return cls


def register_method(name: str):
    def decorator(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            warnings.warn(f"method {name!r} registered twice; the later definition wins", stacklevel=2)
        _REGISTRY[name] = _adopt(name, cls)
        return cls
    return decorator


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_methods() -> list[str]:
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_method(name: str) -> type[Method]:
    """A method class by name; `base.variant` (e.g. `mgmrn.levels1`) gives one of its named variants."""
    if "." in name and name not in _REGISTRY:
        base, variant = name.split(".", 1)
        _REGISTRY[name] = get_method(base).with_variant(variant)
    if name not in _REGISTRY:
        ep = _entry_points().get(name)
        if ep is None:
            raise ConfigError(f"unknown method {name!r}; available: {', '.join(available_methods()) or 'none'}")
        _REGISTRY.setdefault(name, _adopt(name, ep.load()))
    return _REGISTRY[name]


def all_method_names() -> list[str]:
    """Every registered method and every named variant of each (`mgmrn.levels1`), in a stable order."""
    names = []
    for name in available_methods():
        cls = get_method(name)
        names += [name, *(f"{name}.{v}" for v in cls.variants)]
    return names


@dataclass(frozen=True)
class Published:
    """A paper's numbers on one dataset, in %: T1 (ZSL), U / S / H (GZSL); None where not reported."""
    T1: float | None
    U: float | None
    S: float | None
    H: float | None
    source: str

    def get(self, metric: str) -> float | None:
        return getattr(self, metric, None)


def published(method: str, dataset: str) -> Published | None:
    """The published numbers of a method (its base name: variants have none) on a dataset, if any.
    Dataset names match case-insensitively (`CUB` in params.yaml, `cub` in a paper's table)."""
    if "." in method:
        return None
    cls = get_method(method)
    module = sys.modules[cls.__module__]
    path = Path(module.__file__).parent / PUBLISHED_FILE
    if not path.is_file():
        return None
    table = {k.lower(): v for k, v in read_json(path).items() if not k.startswith("_")}
    entry = table.get(dataset.lower())
    if entry is None:
        return None
    if set(entry) != {"T1", "U", "S", "H", "source"}:
        raise ConfigError(f"{path}: entry {dataset!r} has keys {sorted(entry)}; it needs exactly T1, U, S, H "
                          "(null where not reported) and source")
    return Published(**{k: entry.get(k) for k in ("T1", "U", "S", "H")}, source=entry["source"])
