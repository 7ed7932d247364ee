"""params.yaml: the one configuration file of a pipeline run, read by one strict loader.

Every section has a schema below; an unknown or misspelt key, a wrong type, an unknown dataset or
method stops the run before any work with one line naming the file, the key and what is allowed.
Per-dataset sections are keyed by dataset (`sources.<dataset>`) or by dataset and backbone name
(`backbone.<dataset>.<name>`, `extract.<dataset>.<name>`); `features` names the (dataset, backbone) pairs
every stage after prepare runs on, one DVC stage each (the backbone axis); per-method settings live
under `methods.<name>` (`hparams.<dataset>`: overrides of the method's defaults, `search_space.<dataset>`:
its validation grid), each read by exactly the stages of that method (dvc.yaml).
"""
from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from zsl_bench.io import ConfigError
from zsl_bench.method import ANY_DATASET
from zsl_bench.paths import ProjectPaths

# Value sets of settings whose machinery is heavy to import (submitit, torch): declared here, where the
# check reads them; launchers.py checks its table against LAUNCHER_NAMES.
LAUNCHER_NAMES = ("local", "multi_gpu", "slurm")
CLUSTERS = (None, "slurm", "local", "debug")   # launch.slurm.cluster: null = submitit's choice


NONE = type(None)


def listof(item):
    return ("list", item)


def mapof(value):
    return ("map", value)


def spec_of_dataclass(cls) -> dict:
    """A section schema from a settings dataclass: each field's type is its default's (floats take ints)."""
    out = {}
    for f in fields(cls):
        if "schema" in f.metadata:   # a field whose type its default cannot say (a mapping)
            out[f.name] = f.metadata["schema"]
            continue
        default = f.default if f.default is not MISSING else None
        kind = type(default)
        out[f.name] = ((int, float) if kind is float else listof(f.metadata.get("item", str)) if kind is tuple else
                       (str, NONE) if default is None and f.name.endswith("file") else
                       (int, NONE) if default is None else kind)
    return out


def _schemas() -> dict:
    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.features import ExtractSpec

    return {
        "backbone": spec_of_dataclass(BackboneSpec),
        "extract": spec_of_dataclass(ExtractSpec),
        "train": {"methods": listof(str), "seeds": listof(int), "folds": object, "selection_metric": str,
                  "search": object, "device": str, "precision": str, "micro_batch": (int, NONE),
                  "loader_workers": (int, NONE)},
        "features": mapof({"dataset": str, "backbone": str}),
        "ablate": {"method": str, "variants": listof(str), "seeds": listof(int), "backbones": (str, list)},
        "launch": {"launcher": str, "workers": (int, NONE), "gpus": (list, NONE),
                   "slurm": {"partition": (str, NONE), "timeout_min": int, "gpus_per_node": int,
                             "cpus_per_task": int, "mem_gb": (int, float), "array_parallelism": int,
                             "cluster": (str, NONE), "folder": str}},
        "tracking": {"mlflow": bool, "uri": (str, NONE)},   # uri: tracking.configured_uri
        "compare": mapof({"methods": listof(str), "question": str}),   # report_stage.write_comparisons
        "method": {"hparams": mapof(mapof(object)), "search_space": mapof(mapof(listof(object)))},
    }


def _check(value, spec, where: str, file: Path) -> None:
    """Raise ConfigError naming `where` if `value` does not fit `spec`."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: {where} must be a mapping with keys {', '.join(spec)}")
        for k, v in value.items():
            if k not in spec:
                raise ConfigError(f"{file}: unknown key {where}.{k}; allowed: {', '.join(spec)}")
            _check(v, spec[k], f"{where}.{k}", file)
    elif isinstance(spec, tuple) and spec and spec[0] in ("list", "map"):
        kind, item = spec
        if kind == "list":
            if not isinstance(value, list):
                raise ConfigError(f"{file}: {where} must be a list, not {value!r}")
            for i, v in enumerate(value):
                _check(v, item, f"{where}[{i}]", file)
        else:
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: {where} must be a mapping, not {value!r}")
            for k, v in value.items():
                _check(v, item, f"{where}.{k}", file)
    elif spec is not object:
        types = spec if isinstance(spec, tuple) else (spec,)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join("null" if t is NONE else t.__name__ for t in types)
            raise ConfigError(f"{file}: {where} must be {names}, not {value!r}")


def validate(params: dict, file: Path) -> dict:
    """Check the whole file against the schemas, without importing any method or machinery (method names
    against the entry points' names; each method's hyperparameter names are checked by the stages that run
    it, `check_method_settings`); returns `params` unchanged."""
    from zsl_bench.data import available_sources, source_module

    schemas = _schemas()
    top = ("datasets", "features", "sources", "backbone", "extract", "train", "methods", "ablate", "launch",
           "tracking", "compare")
    if not isinstance(params, dict):
        raise ConfigError(f"{file}: must be a mapping of sections ({', '.join(top)})")
    for k in params:
        if k not in top:
            raise ConfigError(f"{file}: unknown section {k!r}; allowed: {', '.join(top)}")
    for k in ("datasets", "features", "sources", "train", "tracking", "compare"):   # dvc.yaml tracks them
        if k not in params:
            raise ConfigError(f"{file}: missing section {k!r}" + (" (write `compare: {}` for no comparisons)"
                                                                  if k == "compare" else ""))
    _check(params["datasets"], listof(str), "datasets", file)
    known = available_sources()
    for ds, body in (params.get("sources") or {}).items():
        if ds not in known:
            raise ConfigError(f"{file}: unknown dataset sources.{ds}; datasets: {', '.join(known)}")
        _check(body, source_module(ds).PARAMS, f"sources.{ds}", file)
    for section in ("backbone", "extract"):   # <section>.<dataset>.<backbone name>
        for ds, named in (params.get(section) or {}).items():
            if ds not in known:
                raise ConfigError(f"{file}: unknown dataset {section}.{ds}; datasets: {', '.join(known)}")
            _check(named, mapof(schemas[section]), f"{section}.{ds}", file)
            for name in named:
                if not BACKBONE_NAME.fullmatch(str(name)):
                    raise ConfigError(f"{file}: {section}.{ds}.{name}: a backbone name is letters, digits, _ and "
                                      "- (it names folders and DVC stages)")
    for ds in params["datasets"]:
        if ds not in known:
            raise ConfigError(f"{file}: unknown dataset {ds!r} in datasets; datasets: {', '.join(known)}")
        if ds not in (params.get("sources") or {}):
            raise ConfigError(f"{file}: missing sources.{ds} (dataset {ds} is in `datasets`)")
    _check_features(params, schemas, file)
    for section in ("train", "ablate", "launch", "tracking", "compare"):
        if section in params:
            _check(params[section], schemas[section], section, file)
    _check_launch(params.get("launch") or {}, file)
    for name, entry in (params.get("compare") or {}).items():
        # Naming methods train.methods leaves out is not an error: the report skips that comparison with one
        # line (report_stage.write_comparisons), so restricting train.methods needs no other edit.
        if len(entry.get("methods", [])) < 2:
            raise ConfigError(f"{file}: compare.{name}.methods must name two or more methods")
        at = [m for m in entry["methods"] if "@" in m]   # METHOD@BACKBONE rows: methods across backbones
        # A backbone params.yaml describes but `features` leaves out is skipped like a method (so the release-only
        # quick start's `features` needs no edit here); one it describes nowhere is a typo.
        described = described_backbones(params)
        if at and (len(at) < len(entry["methods"]) or any(m.partition("@")[2] not in described for m in at)):
            raise ConfigError(f"{file}: compare.{name}.methods: name every row METHOD@BACKBONE with a backbone "
                              f"params.yaml describes ({', '.join(sorted(described))}), or none")
    for k in ("methods", "seeds", "folds", "selection_metric", "search", "device", "precision", "micro_batch"):
        if k not in params["train"]:
            raise ConfigError(f"{file}: missing key train.{k}")
    for where in ("train", "ablate"):
        negative = [s for s in (params.get(where) or {}).get("seeds") or [] if isinstance(s, int) and s < 0]
        if negative:
            raise ConfigError(f"{file}: {where}.seeds must be non-negative integers (a run's slot is "
                              f"seed<k>), not {negative}")
    from zsl_bench.protocol import SELECTION_METRICS, search_mode

    folds = params["train"]["folds"]
    if folds != "auto" and not (isinstance(folds, list) and folds and all(isinstance(k, int) and not isinstance(k, bool)
                                                                         for k in folds)):
        raise ConfigError(f"{file}: train.folds must be auto or a list of fold numbers (e.g. [1, 2, 3]), not {folds!r}")
    try:
        search_mode(params["train"]["search"])
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
    from zsl_bench.training import PRECISIONS

    if params["train"]["precision"] not in PRECISIONS:
        raise ConfigError(f"{file}: train.precision must be one of {', '.join(PRECISIONS)}, "
                          f"not {params['train']['precision']!r}")
    for k, least in (("micro_batch", 1), ("loader_workers", 0)):
        if params["train"].get(k) is not None and params["train"][k] < least:
            raise ConfigError(f"{file}: train.{k} must be null or at least {least}, not {params['train'][k]!r}")
    if params["train"]["selection_metric"] not in SELECTION_METRICS:
        raise ConfigError(f"{file}: train.selection_metric must be one of {', '.join(SELECTION_METRICS)}, "
                          f"not {params['train']['selection_metric']!r}")
    for name, body in (params.get("methods") or {}).items():
        _check(body, schemas["method"], f"methods.{name}", file)
    _check_method_names(params, file)
    return params


BACKBONE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def feature_set_name(dataset: str, backbone: str) -> str:
    """The name of a (dataset, backbone) pair: `features.<name>` in params.yaml and its DVC stages
    (`extract@<name>`); dataset names hold no `-`, so the name reads back unambiguously."""
    return f"{dataset}-{backbone}"


def _check_features(params: dict, schemas: dict, file: Path) -> None:
    """`features`: each entry a (dataset, backbone) pair of a dataset in `datasets` with its backbone and
    extract sections, named `<dataset>-<backbone>` (DVC iterates the mapping: its keys name the stages);
    every dataset has one at least; `ablate.backbones` names backbones that exist."""
    _check(params["features"], schemas["features"], "features", file)
    for name, pair in params["features"].items():
        missing = [k for k in ("dataset", "backbone") if k not in pair]
        if missing:
            raise ConfigError(f"{file}: features.{name} needs {' and '.join(missing)} (e.g. "
                              "`synthetic-vit: {dataset: synthetic, backbone: vit}`)")
        ds, bb = pair["dataset"], pair["backbone"]
        if name != feature_set_name(ds, bb):
            raise ConfigError(f"{file}: features.{name}: the entry of ({ds}, {bb}) is named "
                              f"{feature_set_name(ds, bb)} (DVC's stage names come from these keys)")
        if ds not in params["datasets"]:
            raise ConfigError(f"{file}: features.{name}: dataset {ds} is not in `datasets` "
                              f"({', '.join(params['datasets'])}); add it there or remove this entry")
        for section in ("backbone", "extract"):
            if bb not in ((params.get(section) or {}).get(ds) or {}):
                raise ConfigError(f"{file}: features.{name}: no {section}.{ds}.{bb} section (the backbone "
                                  f"{bb} of {ds} needs one; the shipped params.yaml has examples)")
    for ds in params["datasets"]:
        if not backbones_of(params, ds):
            raise ConfigError(f"{file}: dataset {ds} has no entry in `features`; add e.g. "
                              f"`{feature_set_name(ds, 'resnet101')}: {{dataset: {ds}, backbone: resnet101}}`")
    chosen = (params.get("ablate") or {}).get("backbones", "default")
    if isinstance(chosen, str) and chosen not in ("default", "all"):
        raise ConfigError(f"{file}: ablate.backbones must be default (each dataset's first backbone), all, "
                          f"or a list of backbone names, not {chosen!r}")


def feature_sets(params: dict, dataset: str | None = None) -> list[tuple[str, str]]:
    """The (dataset, backbone) pairs params.yaml's `features` names, in its order (of `dataset` only)."""
    return [(p["dataset"], p["backbone"]) for p in (params.get("features") or {}).values()
            if dataset in (None, p["dataset"])]


def described_backbones(params: dict) -> set[str]:
    """Every backbone name params.yaml mentions: in `features`, `backbone.<dataset>` or `extract.<dataset>`."""
    return ({b for _, b in feature_sets(params)}
            | {name for section in ("backbone", "extract") for named in (params.get(section) or {}).values()
               for name in named or {}})


def backbones_of(params: dict, dataset: str) -> list[str]:
    """The backbones `dataset` runs on; the first is its default (what a command without --backbone uses)."""
    return [bb for _, bb in feature_sets(params, dataset)]


def default_backbone(params: dict, dataset: str) -> str:
    """The dataset's first backbone in `features`, else the first it describes (`backbone.<dataset>`)."""
    named = backbones_of(params, dataset) or list(((params.get("backbone") or {}).get(dataset) or {}))
    if not named:
        raise ConfigError(f"params.yaml: dataset {dataset} has no backbone (`backbone.{dataset}.<name>`) and no "
                          "`features` entry")
    return named[0]


def resolve_backbone(params: dict, dataset: str, backbone: str | None) -> str:
    """`backbone` checked against the dataset's sections (None: its default): one line naming those there are."""
    if backbone is None:
        return default_backbone(params, dataset)
    described = list(((params.get("backbone") or {}).get(dataset) or {}))
    if backbone not in described:
        raise ConfigError(f"params.yaml: dataset {dataset} has no backbone {backbone!r} (backbone.{dataset} "
                          f"names {', '.join(described) or 'none'})")
    return backbone


def ablated_backbones(params: dict, dataset: str) -> list[str]:
    """The backbones the ablate stage runs on for `dataset` (`ablate.backbones`: default, all, or names)."""
    chosen = (params.get("ablate") or {}).get("backbones", "default")
    mine = backbones_of(params, dataset)
    if chosen == "default":
        return mine[:1]
    return mine if chosen == "all" else [b for b in mine if b in chosen]


def _check_launch(launch: dict, file: Path) -> None:
    """`launch`: a registered launcher, a positive worker count, a cluster submitit knows (zsl_bench/launchers.py)."""
    if "launcher" in launch and launch["launcher"] not in LAUNCHER_NAMES:
        raise ConfigError(f"{file}: launch.launcher must be one of {', '.join(LAUNCHER_NAMES)}, not {launch['launcher']!r}")
    if launch.get("workers") is not None and launch["workers"] < 1:
        raise ConfigError(f"{file}: launch.workers must be a positive number of parallel runs or null (one per "
                          f"core), not {launch['workers']!r}")
    for i, gpu in enumerate(launch.get("gpus") or []):
        if isinstance(gpu, bool) or not isinstance(gpu, (int, str)):
            raise ConfigError(f"{file}: launch.gpus[{i}] must be a GPU index or UUID, not {gpu!r}")
    slurm = launch.get("slurm") or {}
    if "cluster" in slurm and slurm["cluster"] not in CLUSTERS:
        raise ConfigError(f"{file}: launch.slurm.cluster must be null (submitit decides: slurm where sbatch "
                          f"exists), slurm, local or debug, not {slurm['cluster']!r}")
    for key in ("timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism"):
        least = 0 if key == "gpus_per_node" else 1e-9
        if key in slurm and slurm[key] < least:
            raise ConfigError(f"{file}: launch.slurm.{key} must be {'≥ 0' if least == 0 else '> 0'}, not {slurm[key]!r}")


def _configured_methods(params: dict) -> list[str]:
    ablate = params.get("ablate") or {}
    return list(params["train"]["methods"]) + ([ablate["method"]] if ablate.get("method") else [])


def _check_method_names(params: dict, file: Path) -> None:
    """Every method named is registered (by its entry point's name: nothing imported) and has a
    `methods.<name>` entry (dvc.yaml tracks it per stage). A named variant (`mgmrn.image`: image mode, for
    GPUs) takes its base's entry; that the variant exists is checked with the plugin (`check_method_settings`)."""
    from importlib.metadata import entry_points

    registered = sorted(ep.name for ep in entry_points(group="zsl_bench.methods"))
    for name in _configured_methods(params):
        base = name.split(".", 1)[0]
        if base not in registered and not _registered_at_runtime(base) and not _registered_at_runtime(name):
            raise ConfigError(f"{file}: train.methods: unknown method {name!r}; available: {', '.join(registered)}")
        if base not in (params.get("methods") or {}):
            raise ConfigError(f"{file}: missing methods.{base} (write `{base}: {{}}` under `methods:` to use its "
                              f"defaults); methods: {', '.join(registered)}")


def _registered_at_runtime(name: str) -> bool:
    """A method registered in this process without an entry point (tests, notebooks: register_method)."""
    import sys

    registry = sys.modules.get("zsl_bench.registry")
    return bool(registry) and name in getattr(registry, "_REGISTRY", {})


def check_method_settings(params: dict, file: Path | str = "params.yaml", only: list[str] | None = None) -> None:
    """Each configured method's overrides and grid (`only` these methods: the ablate stage's) name only
    hyperparameters it has, for every configured dataset, and every ablation variant exists: run by the
    stages that run methods, before any run starts (it imports the method plugins)."""
    from zsl_bench.registry import get_method

    ablate = params.get("ablate") or {}
    for name in only if only is not None else _configured_methods(params):
        try:
            cls = get_method(name)
        except ConfigError as e:
            raise ConfigError(f"{file}: train.methods: {e}") from None
        for ds in params["datasets"]:
            try:
                overrides = method_overrides(params, name, ds)
                default = cls.default_hparams(ds, overrides["hparams"])
            except ConfigError as e:
                raise ConfigError(f"{file}: methods.{name}.hparams.{ds}: {e}") from None
            unknown = sorted(set(overrides["search_space"] or {}) - set(default))
            if unknown:
                raise ConfigError(f"{file}: methods.{name}.search_space.{ds}: unknown hyperparameter(s) "
                                  f"{', '.join(unknown)}; {name}'s: {', '.join(sorted(default))}")
    for variant in ablate.get("variants") or []:
        try:
            get_method(f"{ablate['method']}.{variant}")
        except ConfigError as e:
            raise ConfigError(f"{file}: ablate.variants: {e}") from None


def method_overrides(params: dict, method: str, dataset: str) -> dict:
    """What params.yaml sets for a method (its base name for a variant) on a dataset: {"hparams": overrides
    of its defaults, "search_space": a grid replacing its own, or None}, from `methods.<name>.hparams|
    search_space.<dataset>`, else their ANY_DATASET entry."""
    body = (params.get("methods") or {}).get(method.split(".")[0]) or {}

    def pick(by_dataset):
        return by_dataset.get(dataset, by_dataset.get(ANY_DATASET)) if by_dataset else None

    return {"hparams": dict(pick(body.get("hparams")) or {}), "search_space": pick(body.get("search_space"))}


def load_params(paths: ProjectPaths) -> dict:
    import yaml

    path = paths.root / "params.yaml"
    try:
        with open(path) as f:
            params = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from a zsl-bench project folder") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return validate(params, path)


def section(params: dict, *keys: str, path: Path | str = "params.yaml"):
    node = params
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            raise ConfigError(f"{path}: missing key {'.'.join(keys[:i + 1])}")
        node = node[k]
    return node


AA_SLOT_SUFFIX = "-AA"   # runs/<dataset>/ablation/<method>-AA/seed<S>: the A/A replicate's slot


def ablation_runs(dataset: str, params: dict, paths: ProjectPaths, backbone: str):
    """What the ablate stage runs, as (method, replicate, seed, slot) — what params.yaml's `ablate` section configures: the official configuration, its A/A
    rerun (replicate 1: the same configuration with an independent random stream, the noise floor every
    variant's ΔH is read against) and each variant, all in the same worker pool under the same thread
    settings, so no row differs from another by its numerical environment."""
    cfg = section(params, "ablate")
    base = cfg["method"]
    if not cfg["variants"] or backbone not in ablated_backbones(params, dataset):
        return   # nothing to ablate: no official row or A/A either
    for seed in cfg["seeds"]:
        yield base, 0, int(seed), paths.ablation_slot(dataset, backbone, base, int(seed))
        yield base, 1, int(seed), paths.ablation_slot(dataset, backbone, base + AA_SLOT_SUFFIX, int(seed))
    for name in (f"{base}.{v}" for v in cfg["variants"]):
        for seed in cfg["seeds"]:
            yield name, 0, int(seed), paths.ablation_slot(dataset, backbone, name, int(seed))
