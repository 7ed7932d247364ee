"""params.yaml: the one configuration file of a pipeline run."""
from __future__ import annotations

from pathlib import Path

from zsl_bench.io import DataError
from zsl_bench.paths import ProjectPaths


def load_params(paths: ProjectPaths) -> dict:
    import yaml

    path = paths.root / "params.yaml"
    try:
        with open(path) as f:
            params = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run from a zsl-bench project folder") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    return params


def section(params: dict, *keys: str, path: Path | str = "params.yaml"):
    node = params
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            raise DataError(f"{path}: missing key {'.'.join(keys[:i + 1])}")
        node = node[k]
    return node
