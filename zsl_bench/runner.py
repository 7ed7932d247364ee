"""One run end to end: load the dataset and features, evaluate, write the run folder (records.py).
Mirroring into MLflow is not done here: `tracking.sync` is its one writer (report stage, `zsl-bench train`).

A run's identity (its key) covers everything that can change its trained models and recorded traces: the
protocol, the method and its resolved configurations and overrides, the dataset and feature fingerprints, the
seed, and the code — the harness version and the meaning of every project module the run loads
(code_identity.py), the method's own included. Not the selection policies, which only read the traces
(policies.py): a new policy retrains nothing. A run made by other code is never reused: it has another key.
`plan_run` computes a key without training (`zsl-bench status` compares it with the runs on disk).
"""
from __future__ import annotations

import dataclasses
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from zsl_bench.io import DataError
from zsl_bench.paths import ProjectPaths
from zsl_bench.policies import HEADLINE_POLICY
from zsl_bench.protocol import PROTOCOL_VERSION, resolve_folds
from zsl_bench.provenance import provenance
from zsl_bench.records import SCHEMA_VERSION, environment, find_run_folders, run_key, write_run


@dataclass(frozen=True)
class RunRequest:
    dataset: str
    method: str
    seed: int
    backbone: str = ""                   # the feature set's backbone name (params.yaml `features`); the store
                                         # read is features/<dataset>/<backbone>
    folds: tuple | str = "auto"         # validation folds (protocol.resolve_folds)
    selection_metric: str = "H"
    search: bool | str = "grid"          # grid | none | random:N (True/False: grid/none)
    device: str = "auto"
    hparam_overrides: dict | None = None   # the user's overrides of the method's defaults (params.yaml)
    search_space: dict | None = None     # replaces the method's grid (params.yaml)
    replicate: int = 0                   # > 0: the same run with an independent random stream (the ablation's A/A)
    stage: str = "train"                 # "ablation": run in the ablate stage's pool, under its thread settings
    precision: str = "fp32"              # torch fits: fp32 (the official codes') | bf16 | fp16 | auto (opt-in)
    micro_batch: int | None = None       # torch fits: most samples per forward (larger batches accumulate)
    loader_workers: int | None = None    # image methods: DataLoader workers (None: runtime.loader_workers())
    # The method's defaults on the dataset with the overrides applied: resolved once where the request is made
    # (stages.run_request) and passed on; None: plan_run resolves them (`Method.default_hparams`).
    defaults: dict | None = None


def code_fingerprint(method_cls) -> dict:
    """What a run's key knows of the code: the harness version and the meaning digest of every project module
    a run of the method loads (code_identity.run_code)."""
    from zsl_bench.code_identity import run_code

    return run_code(method_cls)


class NotApplicable(DataError):
    """The method cannot run on this dataset's inputs at all (not a failed run: the stage records a skip)."""


def check_applicable(method_cls, store, hparams: dict) -> None:
    """Raise NotApplicable when `store` can never hold the arrays the method reads with `hparams`."""
    from zsl_bench.evaluator import Evaluator

    why = store.unavailable(Evaluator.features_of(method_cls, store, hparams))
    if not why and method_cls.requires_token_maps and method_cls.input_kind != "image" \
            and not store.token_maps:
        why = f"reads a token model's patch tokens (a ViT's); {store.backbone_label()} holds a CNN's maps"
    if why:
        raise NotApplicable(f"{method_cls.name} {why}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class PlannedRun:
    """A request resolved against the dataset and feature store: its key and everything the key was made of
    (`key_spec`, kept in the record so `zsl-bench status` can say what changed), ready to train."""
    request: RunRequest
    key: str
    key_spec: dict
    folder: Path
    evaluator: object
    device: str


def plan_run(request: RunRequest, paths: ProjectPaths, progress: bool = True, slot: Path | None = None) -> PlannedRun:
    """Resolve `request` (method, dataset, feature store, configurations, code) into its key, training nothing."""
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.features import FeatureStore
    from zsl_bench.method import TrainSettings
    from zsl_bench.registry import get_method
    from zsl_bench.runtime import loader_workers, resolve_device
    from zsl_bench.training import Distributed, resolve_precision

    method_cls = get_method(request.method)
    dataset = load_dataset(paths.prepared(request.dataset))
    if not request.backbone:
        raise DataError(f"run of {request.method} on {request.dataset}: no backbone named (params.yaml `features`)")
    store = FeatureStore(paths.features(request.dataset, request.backbone))
    store.check_matches(dataset)
    defaults = (request.defaults if request.defaults is not None
                else method_cls.default_hparams(dataset.name, request.hparam_overrides))
    check_applicable(method_cls, store, defaults)
    device = "cpu" if method_cls.device == "cpu" else resolve_device(request.device)
    folds = resolve_folds(request.folds, dataset, store.index.get("backbone_spec") or {})
    settings = TrainSettings(precision=resolve_precision(request.precision, device), micro_batch=request.micro_batch,
                             loader_workers=loader_workers() if request.loader_workers is None else request.loader_workers)
    evaluator = Evaluator(dataset, store, method_cls, seed=request.seed, folds=folds,
                          selection_metric=request.selection_metric, search=request.search, device=device,
                          progress=progress and Distributed.current().is_main, defaults=defaults,
                          search_space=request.search_space, replicate=request.replicate, settings=settings)
    key_spec = {"protocol_version": PROTOCOL_VERSION, "method": request.method, "dataset": request.dataset,
                "backbone": request.backbone,
                "dataset_fingerprint": dataset.fingerprint(), "features_sha256": [store.fingerprint(f) for f in evaluator.features],
                "seed": request.seed, "folds": list(folds), "search": evaluator.search,
                "selection_metric": request.selection_metric,
                "configs": evaluator.configs, "hparam_overrides": request.hparam_overrides or {},
                "search_space_override": request.search_space, "replicate": request.replicate,
                "stage": request.stage, "training": {"precision": settings.precision, "micro_batch": settings.micro_batch},
                "code": code_fingerprint(method_cls)}
    key = run_key(key_spec)
    folder = (slot or paths.run_slot(request.dataset, request.backbone, request.method, request.seed)) / key
    return PlannedRun(request, key, key_spec, folder, evaluator, device)


def execute(request: RunRequest, paths: ProjectPaths, progress: bool = True, slot: Path | None = None) -> Path:
    """Run (or find, if already done) the run folder for `request` in `slot` (default: its train-stage slot);
    returns its path. A run of the same key that was interrupted (killed, preempted) continues from its last
    checkpoint (journal.py). Under torchrun every process trains; rank 0 alone writes."""
    from zsl_bench.journal import RunJournal, journal_folder
    from zsl_bench.runtime import init_distributed
    from zsl_bench.training import Distributed

    start = time.time()
    init_distributed()
    planned = plan_run(request, paths, progress, slot)
    evaluator, key_spec, key, folder, device = (planned.evaluator, planned.key_spec, planned.key, planned.folder,
                                                planned.device)
    dataset, store, method_cls = evaluator.dataset, evaluator.store, evaluator.method_cls
    if folder in find_run_folders(folder.parent):
        return folder  # done before: content-addressed, so identical
    store.verify(evaluator.features)   # a damaged array stops the run first
    dist = Distributed.current()

    journal = RunJournal(journal_folder(folder), writer=dist.is_main)
    out = evaluator.run(journal)
    if not dist.is_main:
        return folder
    shared = {**_shared_record(request, paths, evaluator, out, device), "code": key_spec["code"],
              "key_spec": {k: v for k, v in key_spec.items() if k != "code"}}
    when = provenance(paths.root, time.time() - start, peak_rss_mb(), resumed=journal.resumed,
                      processes=dist.world)
    for variant, variant_out in out.score_variants.items():
        # Same fitted models, another scoring rule: its own record, beside the method's in the same slot.
        name = f"{request.method}.{variant}"
        variant_record = {**_with_overrides(_record_of(variant_out, dataset), shared,
                                            method_cls.score_variants[variant]), "method": name,
                          "run_key": run_key({**key_spec, "method": name}),
                          "score_variant_of": {"method": request.method, "run_key": key,
                                               "overrides": method_cls.score_variants[variant]}}
        write_run(folder.parent / variant_record["run_key"], variant_record, variant_out.predictions,
                  variant_out.state, provenance=when)
    record = {**_record_of(out, dataset), **shared, "method": request.method, "run_key": key}
    write_run(folder, record, out.predictions, out.state, views=out.views, provenance=when)
    journal.clear()
    return folder


def _shared_record(request: RunRequest, paths: ProjectPaths, evaluator, out, device: str) -> dict:
    """The parts of a record that a method's run and its scoring variants share: what ran, on what, how."""
    from zsl_bench.training import Distributed

    dataset, store, method_cls = evaluator.dataset, evaluator.store, evaluator.method_cls
    return {
        "schema_version": SCHEMA_VERSION, "protocol_version": PROTOCOL_VERSION,
        "dataset": request.dataset, "backbone": request.backbone, "seed": request.seed,
        "replicate": request.replicate,
        "seeds": {"run": request.seed, "per_fit": "seed_hash(run seed, phase name): the same for every configuration and variant",
                  "validation_split": dataset.meta.get("split_seed"),
                  "data": dataset.meta.get("generator", {}).get("seed"),
                  "backbone": store.index["backbone_spec"].get("seed")},
        "method_info": {"input_kind": method_cls.input_kind, "paper": method_cls.paper, "device": method_cls.device,
                        "uses_unseen_semantics": method_cls.uses_unseen_semantics,
                        "default_calibration_gamma": method_cls.fixed_gamma(evaluator.default_hparams),
                        "paper_rule": dataclasses.asdict(method_cls.paper_rule) if method_cls.paper_rule else None,
                        "official_selection": method_cls.official_selection(evaluator.default_hparams),
                        "capabilities": sorted(method_cls.capabilities)},
        "config": {"folds": list(evaluator.folds), "folds_requested": request.folds if request.folds == "auto"
                   else list(request.folds), "selection_metric": request.selection_metric, "search": evaluator.search,
                   "configs": out.configs, "hparam_overrides": request.hparam_overrides or {},
                   "search_space": evaluator.search_space,
                   "training": {"precision": evaluator.settings.precision, "micro_batch": evaluator.settings.micro_batch,
                                "processes": Distributed.current().world}},
        "model": {"parameters": out.parameters},
        "data": {"dataset_fingerprint": dataset.fingerprint(), "dataset_checks": dataset.meta.get("checks", []),
                 # pairs of classes the dataset's maker declares told apart at one scale only (the ground truth
                 # an ablation of granularity is read against: zsl_bench.twin_pairs)
                 "class_pairs": dataset.meta.get("class_pairs", []),
                 # what the pretraining-overlap report reads (zsl_bench.overlap, in the report stage): the
                 # classes that must be unseen to the backbone
                 "classes": {"test_unseen": [dataset.class_names[c] for c in dataset.unseen_classes],
                             "val_unseen": sorted({dataset.class_names[c] for k in evaluator.folds
                                                   for c in dataset.fold_classes(k)[1]})},
                 "features": {"path": str(store.root.relative_to(paths.root)) if store.root.is_relative_to(paths.root)
                              else str(store.root), "arrays": list(evaluator.features),
                              "sha256": [store.fingerprint(f) for f in evaluator.features],
                              "backbone": store.index["backbone"], "input_size": store.index["input_size"]}},
        "environment": environment(device),
    }


def _with_overrides(own: dict, shared: dict, overrides: dict) -> dict:
    """A scoring variant's record: every configuration it lists (`hparams` per policy, `config.configs`)
    carries the variant's scoring overrides, so the record states once what its numbers were computed with
    (`score_variant_of.overrides` says what differs from the method's own record)."""
    def apply(config: dict) -> dict:
        return {**config, **overrides}

    selected = {policy: {m: apply(x) for m, x in c.items()} if _per_metric(c) else apply(c)
                for policy, c in own["selected_configs"].items()}
    config = {**shared["config"], "configs": [apply(c) for c in shared["config"]["configs"]]}
    return {**own, **shared, "selected_configs": selected, "config": config}


def _configs_of(entry: dict, configs: list[dict]) -> dict:
    by_metric = {m: configs[p["config_id"]] for m, p in entry["points"].items()}
    return by_metric if len({p["config_id"] for p in entry["points"].values()}) > 1 else configs[entry["config_id"]]


def _per_metric(c: dict) -> bool:
    return bool(c) and all(isinstance(v, dict) for v in c.values()) and set(c) <= {"T1", "H", "AUSUC"}


def _record_of(out, dataset) -> dict:
    """The parts of a record that come from one evaluator output."""
    chosen = out.configs[out.selection[HEADLINE_POLICY]["config_id"]]
    return {
        "attribute_embeddings": {
            "available": {k: {f: v for f, v in e.items() if f in ("source", "git_blob", "shape", "text_model", "pretrained",
                                                                  "templates", "templates_version")}
                          for k, e in dataset.meta.get("attribute_embeddings", {}).items()},
            "used": chosen.get("attribute_embedding"),
        },
        # Per policy of the run's time: its configuration, or one per metric where they differ (`oracle`).
        "selected_configs": {policy: _configs_of(entry, out.configs) for policy, entry in out.selection.items()},
        "selection": out.selection,
        "traces": {"validation": out.validation_trace, "validation_folds": out.validation_folds,
                   "test": out.test_trace},
    }
