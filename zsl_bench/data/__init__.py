"""Dataset sources. A source is a module here with `NAME`, `required_archives(params)` and
`prepare_source(raw, out, params, progress, downloads)`; adding a dataset means adding one module."""
from __future__ import annotations

import importlib
from pathlib import Path

from zsl_bench.io import DataError


def source_module(name: str):
    try:
        module = importlib.import_module(f"{__name__}.{name.lower()}")
    except ModuleNotFoundError:
        module = None
    if module is None or not hasattr(module, "prepare_source"):
        raise DataError(f"unknown dataset source {name!r}; available: {', '.join(available_sources())}")
    return module


def prepare_source(name: str, raw: Path, out: Path, params: dict, progress: bool = True,
                   downloads: Path | None = None) -> Path:
    return source_module(name).prepare_source(raw, out, params, progress=progress, downloads=downloads)


def available_sources() -> list[str]:
    import pkgutil

    modules = [importlib.import_module(f"{__name__}.{info.name}")
               for info in pkgutil.iter_modules([str(Path(__file__).parent)])]
    return sorted(m.NAME for m in modules if hasattr(m, "prepare_source"))
