"""The compute stages as functions of (params, paths): prepare, backbone, extract, train, ablate.
`pipelines/` and the CLI both call these; the report stage is `report_stage.py`."""
from __future__ import annotations

import numbers
import time
from pathlib import Path

from zsl_bench.io import ConfigError, DataError
from zsl_bench.params import ablation_runs, check_method_settings, section
from zsl_bench.paths import ProjectPaths


def check_dataset(dataset: str, params: dict, backbone: str | None = None) -> str | None:
    """A dataset every stage can name: one of zsl-bench's sources (zsl_bench/data/), with its sections in
    params.yaml, and (given) a backbone it describes; returns the backbone (None: the dataset's default).
    Otherwise one line saying which names exist or which section to add."""
    from zsl_bench.params import resolve_backbone

    missing = [f"{s}.{dataset}" for s in ("sources", "backbone", "extract") if dataset not in (params.get(s) or {})]
    if missing:   # only now ask which datasets exist (that imports every source: not on a stage's own path)
        from zsl_bench.data import available_sources

        known = available_sources()
        if dataset not in known:
            raise ConfigError(f"unknown dataset {dataset!r}; zsl-bench's datasets are {', '.join(known)} "
                              "(`zsl-bench datasets` shows what each needs)")
        raise ConfigError(f"params.yaml: no {' or '.join(missing)} section for dataset {dataset} (the shipped "
                          "params.yaml has one for each dataset: copy it from there)")
    return resolve_backbone(params, dataset, backbone)


def check_seed(seed: int, where: str = "--seed") -> int:
    """Run seeds name run slots (`seed<k>`) and seed streams: non-negative integers."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"{where} must be a non-negative integer, not {seed!r}")
    return seed


def prepare(dataset: str, params: dict, paths: ProjectPaths, progress: bool = True) -> Path:
    from zsl_bench.data import prepare_source

    check_dataset(dataset, params)
    source_params = section(params, "sources", dataset)
    out = prepare_source(dataset, paths.raw(dataset), paths.prepared(dataset),
                         {k: v for k, v in source_params.items() if k != "attribute_embeddings"},
                         progress=progress, downloads=paths.downloads)
    kinds = source_params.get("attribute_embeddings", [])
    if kinds:
        import sys

        from zsl_bench import attribute_embeddings
        from zsl_bench.data.dataset import attach_attribute_embeddings, load_dataset
        from zsl_bench.data.download import FetchOptions

        ds = load_dataset(out)
        opts = FetchOptions.from_params(source_params, progress)
        # As available: an embedding that cannot be had here (no attribute names in a release-only
        # preparation, no word2vec file offline) is left out with one line; a method using it says why.
        computed, unavailable = {}, {}
        for kind in kinds:
            try:
                computed[kind] = attribute_embeddings.compute(kind, ds, paths.downloads, opts)
            except DataError as e:
                unavailable[kind] = str(e)
                print(f"prepare {dataset}: no '{kind}' attribute embedding: {e}", file=sys.stderr)
        attach_attribute_embeddings(out, computed, unavailable)
    return out


def backbone(dataset: str, params: dict, paths: ProjectPaths, progress: bool = True, name: str | None = None) -> Path:
    """The backbone stage of one (dataset, backbone): train it here, or record what will be loaded or
    imported (`name`: the backbone; None: the dataset's default)."""
    from zsl_bench.backbone import BackboneSpec, describe_untrained, train_backbone
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.runtime import limit_threads

    name = check_dataset(dataset, params, name)
    spec = BackboneSpec.from_params(section(params, "backbone", dataset, name), where=f"backbone.{dataset}.{name}")
    out = paths.backbone(dataset, name)
    if spec.source != "train_on_seen":  # pretrained weights, imported vectors or an HDF5 file: nothing to train
        return describe_untrained(spec, out)
    limit_threads()
    return train_backbone(load_dataset(paths.prepared(dataset)), spec, out, progress=progress)


def extract(dataset: str, params: dict, paths: ProjectPaths, progress: bool = True, name: str | None = None) -> Path:
    """The extract stage of one (dataset, backbone): extract its features, or import them."""
    from zsl_bench import feature_extraction, feature_import, features
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.io import read_json
    from zsl_bench.runtime import limit_threads

    name = check_dataset(dataset, params, name)
    ds = load_dataset(paths.prepared(dataset))
    info = read_json(paths.backbone(dataset, name) / "backbone.json")
    source, out = info["spec"]["source"], paths.features(dataset, name)
    if source == "xlsa17_res101":
        if ds.xlsa17_dir is None:
            raise DataError(f"{paths.prepared(dataset)}: not split by an xlsa17 release; no res101.mat to import")
        return feature_import.import_res101(ds, ds.xlsa17_dir / "res101.mat", out, info)
    if source == "hdf5":
        return feature_import.register_hdf5(ds, Path(info["spec"]["features_file"]).expanduser(), out, info)
    from zsl_bench.runtime import resolve_device

    limit_threads()
    spec = features.ExtractSpec.from_params(section(params, "extract", dataset, name))
    return feature_extraction.extract(ds, paths.backbone(dataset, name), out, spec, progress=progress,
                                      device=resolve_device(section(params, "train", "device")))


def run_request(dataset: str, method: str, seed: int, params: dict, search: bool | str | None = None,
                backbone: str | None = None):
    """The RunRequest params.yaml makes for (dataset, method, seed) on a backbone (None: the dataset's
    default): train settings and the method's hyperparameter overrides and grid for the dataset."""
    from zsl_bench.params import method_overrides
    from zsl_bench.registry import get_method
    from zsl_bench.runner import RunRequest

    backbone = check_dataset(dataset, params, backbone)
    check_seed(seed)
    t = section(params, "train")
    overrides = method_overrides(params, method, dataset)   # merged over the defaults here, once
    folds = t["folds"] if t["folds"] == "auto" else tuple(int(k) for k in t["folds"])
    return RunRequest(dataset=dataset, backbone=backbone, method=method, seed=int(seed), folds=folds,
                      selection_metric=t["selection_metric"], search=t["search"] if search is None else search,
                      device=t["device"], hparam_overrides=overrides["hparams"], search_space=overrides["search_space"],
                      defaults=get_method(method).default_hparams(dataset, overrides["hparams"]),
                      precision=t["precision"], micro_batch=t["micro_batch"],
                      loader_workers=t.get("loader_workers"))


def train(dataset: str, params: dict, paths: ProjectPaths, progress: bool = True,
          backbone: str | None = None) -> list[Path]:
    """The train stage of one (dataset, backbone): every method × seed of params.yaml (`train_jobs`) through the launcher
    (`launch.launcher`: a local pool of `launch.workers` processes with cores // workers threads each, one run
    per GPU, or a Slurm job array), like the ablate stage. Runs done before are found again by their content
    key (so editing one method retrains only its runs), slots no longer configured are removed, and a method
    the features can never serve is marked skipped in its slots, with one line saying why."""
    import shutil

    from zsl_bench.launchers import launch
    from zsl_bench.records import SKIPPED_FILE, write_skipped

    backbone = check_dataset(dataset, params, backbone)
    jobs, skipped = train_jobs(dataset, params, paths, with_skipped=True, backbone=backbone)
    marked = {write_skipped(slot, method, dataset, why) for slot, (method, why) in skipped.items()}
    for job in jobs:
        (Path(job.slot) / SKIPPED_FILE).unlink(missing_ok=True)   # it runs now (the inputs changed)
    folders = launch(jobs, params, progress=progress, desc=f"train {dataset}/{backbone}")
    root = paths.runs_of(dataset, backbone)
    root.mkdir(parents=True, exist_ok=True)   # the stage's DVC output, even with nothing to run
    for folder in folders:
        prune_slot(folder)   # folders of other keys (older code or settings) go once the current one is there
    slots = {f.parent for f in folders} | marked
    made = _stage_slots(root)
    kept = []
    for stale in sorted(p for p in root.glob("*/seed*") if p.is_dir() and p not in slots):
        if stale.relative_to(root).as_posix() in made:
            shutil.rmtree(stale)   # the stage made it, and its method or seed is no longer in params.yaml
        else:
            kept.append(stale.relative_to(root).as_posix())   # a run asked for by hand (`zsl-bench train`)
    if kept:
        import sys

        print(f"train {dataset}/{backbone}: kept {len(kept)} run slot(s) made outside params.yaml ({', '.join(kept)}); reports "
              "name them and never average them; delete a folder to drop it", file=sys.stderr)
    _stage_slots(root, sorted(p.relative_to(root).as_posix() for p in slots))
    return folders


STAGE_SLOTS = ".stage_slots.json"   # runs/<dataset>/<backbone>/train/: the slots the train stage itself made


def _stage_slots(root: Path, slots: list[str] | None = None) -> set[str]:
    """The slots the train stage made (read), or record them (`slots`): the stage removes only those when
    params.yaml stops naming them, never a run a user made by hand in a slot of their own."""
    from zsl_bench.io import read_json, write_json

    path = root / STAGE_SLOTS
    if slots is not None:
        write_json(path, {"slots": slots})
        return set(slots)
    return set(read_json(path)["slots"]) if path.is_file() else set()


def train_run(dataset: str, method: str, seed: int, params: dict, paths: ProjectPaths, progress: bool = True,
              backbone: str | None = None, skip_inapplicable: bool = True) -> Path:
    """One run of the train stage in its slot, in this process (by hand, or under torchrun:
    `python -m zsl_bench_pipelines.train DATASET BACKBONE METHOD SEED`). A complete run folder of the same key is adopted, not
    retrained; folders of other keys are removed once the current one is there. A run the features can never
    serve is recorded as skipped, as the stage does, or with `skip_inapplicable=False` (a user's explicit
    request: `zsl-bench train`) raised as the one-line error it is."""
    import sys

    from zsl_bench.records import SKIPPED_FILE, write_skipped
    from zsl_bench.runner import NotApplicable, execute
    from zsl_bench.runtime import limit_threads

    from zsl_bench.launchers import slot_lock
    from zsl_bench.plan import record_actual

    limit_threads()
    check_method_settings(params, paths.root / "params.yaml")
    request = run_request(dataset, method, seed, params, backbone=backbone)
    slot = paths.run_slot(dataset, request.backbone, method, seed)
    started = time.time()
    try:
        with slot_lock(paths.root, slot):
            folder = execute(request, paths, progress=progress)
    except NotApplicable as e:
        if not skip_inapplicable:
            raise DataError(f"{e}: choose a backbone it can use (`--backbone`; params.yaml `features` lists "
                            f"{dataset}'s)") from None
        print(f"skipped {method} on {dataset}/{request.backbone} (seed {seed}): {e}", file=sys.stderr)
        return write_skipped(slot, method, dataset, str(e))
    from zsl_bench.training import Distributed

    if not Distributed.current().is_main:
        return folder   # under torchrun rank 0 alone writes, and alone tidies the slot (after its write)
    record_actual(folder, paths, since=started)   # the plan's count beside the wall time it took
    (folder.parent / SKIPPED_FILE).unlink(missing_ok=True)   # it runs now (the inputs changed)
    prune_slot(folder)
    return folder


def train_jobs(dataset: str, params: dict, paths: ProjectPaths, with_skipped: bool = False,
               backbone: str | None = None, inputs_checked: bool = True):
    """The train stage's runs of a (dataset, backbone) as `launchers.Job`s (also `zsl-bench sweep`). A method the features
    can never serve is left out with one line; with `with_skipped`, returns (jobs, {slot: (method, why)}).
    `inputs_checked=False`: every method, the features not read (`zsl-bench plan` before they exist)."""
    import sys

    from zsl_bench.features import FeatureStore
    from zsl_bench.launchers import Job
    from zsl_bench.registry import get_method
    from zsl_bench.runner import NotApplicable, check_applicable

    backbone = check_dataset(dataset, params, backbone)
    check_method_settings(params, paths.root / "params.yaml")
    # No features yet: one line naming the stage to run.
    store = FeatureStore(paths.features(dataset, backbone)) if inputs_checked else None
    jobs, skipped = [], {}
    seeds = [int(s) for s in section(params, "train", "seeds")]
    for method in section(params, "train", "methods"):
        requests = [run_request(dataset, method, seed, params, backbone=backbone) for seed in seeds]
        if inputs_checked:
            try:
                check_applicable(get_method(method), store, requests[0].defaults)
            except NotApplicable as e:
                print(f"skipped {method} on {dataset}/{backbone}: {e}", file=sys.stderr)
                skipped.update({paths.run_slot(dataset, backbone, method, seed): (method, str(e)) for seed in seeds})
                continue
            check_arrays(get_method(method), store, requests[0].defaults)
        jobs += [Job(r, str(paths.root), str(paths.run_slot(dataset, backbone, method, r.seed))) for r in requests]
    return (jobs, skipped) if with_skipped else jobs


def check_arrays(method_cls, store, hparams: dict) -> None:
    """Every array the method reads is in the store (a level or size `extract` did not keep is a one-line
    error naming the setting), checked when the stage plans its runs, not after the others have trained."""
    from zsl_bench.evaluator import Evaluator

    for name in Evaluator.features_of(method_cls, store, hparams):
        store.shape(name)


def prune_slot(folder: Path) -> None:
    """Remove the run folders beside `folder` that are neither it nor scoring variants read off it."""
    import shutil

    from zsl_bench.io import read_json
    from zsl_bench.records import RECORD_FILE

    key = folder.name
    for other in folder.parent.iterdir():
        if other == folder or not other.is_dir():
            continue
        record = read_json(other / RECORD_FILE) if (other / RECORD_FILE).is_file() else {}
        if (record.get("score_variant_of") or {}).get("run_key") != key:
            shutil.rmtree(other)


def shares_train_run(dataset: str, params: dict, backbone: str | None = None) -> bool:
    """Whether the train stage's run of `ablate.method` is the ablation's official configuration itself: the
    method is among train.methods and its validation search tries its defaults only (`train.search: none`,
    or a grid of one point, the defaults). Both stages run in the same kind of pool under the same thread
    rule, so the ablate stage reads that run (records.SHARED_FILE) instead of training it a second time."""
    from zsl_bench.protocol import search_mode
    from zsl_bench.registry import get_method

    base = section(params, "ablate", "method")
    if base not in section(params, "train", "methods"):
        return False
    request = run_request(dataset, base, 0, params, backbone=backbone)
    mode = search_mode(request.search)
    if mode != "grid":
        return mode == "none"
    cls, default = get_method(base), request.defaults
    space = cls.search_space(dataset) if request.search_space is None else dict(request.search_space)
    return all(values and all(v == default[k] for v in values) for k, values in space.items())


def ablation_jobs(dataset: str, params: dict, paths: ProjectPaths, backbone: str | None = None,
                  inputs_checked: bool = True):
    """The ablate stage's plan, writing nothing: (jobs, skipped, shared) where jobs are `launchers.Job`s of
    the runs to make, skipped maps a slot to (variant, why) for a variant that cannot run on the dataset's
    inputs (maps on imported vectors) or computes exactly the official configuration on them (one line each),
    and shared maps the official configuration's slots to the train stage's slots when that stage's run is
    the same computation (`shares_train_run`; its job is then the train stage's own, found by its key).
    `inputs_checked=False`: the features are not read, so no variant is skipped for its inputs (`zsl-bench plan`)."""
    import sys
    from dataclasses import replace

    from zsl_bench.features import FeatureStore
    from zsl_bench.launchers import Job
    from zsl_bench.registry import get_method
    from zsl_bench.runner import NotApplicable, check_applicable

    backbone = check_dataset(dataset, params, backbone)
    check_method_settings(params, paths.root / "params.yaml", only=[section(params, "ablate", "method")])
    jobs, skipped, why_not, shared = [], {}, {}, {}
    runs = list(ablation_runs(dataset, params, paths, backbone))
    if not runs:
        return jobs, skipped, shared   # not ablated on this backbone (`ablate.backbones`)
    store = FeatureStore(paths.features(dataset, backbone)) if inputs_checked else None
    share = shares_train_run(dataset, params, backbone)
    train_seeds = {int(s) for s in section(params, "train", "seeds")}   # only a seed the train stage runs
    for name, replicate, seed, slot in runs:
        if name not in why_not:
            try:
                cls = get_method(name)
                defaults = run_request(dataset, name, seed, params, backbone=backbone).defaults
                if inputs_checked:
                    check_applicable(cls, store, defaults)
                    check_arrays(cls, store, defaults)
                same = cls.identical_to_base()
                why_not[name] = f"not run: identical to the official configuration here ({same})" if same else None
            except NotApplicable as e:
                why_not[name] = str(e)
            if why_not[name]:
                print(f"skipped ablation {name} on {dataset}: {why_not[name]}", file=sys.stderr)
        if why_not[name]:
            skipped[slot] = (name, why_not[name])
            continue
        if share and name == section(params, "ablate", "method") and not replicate and seed in train_seeds:
            shared[slot] = paths.run_slot(dataset, backbone, name, seed)
            jobs.append(Job(run_request(dataset, name, seed, params, backbone=backbone), str(paths.root),
                            str(shared[slot])))
            continue
        request = replace(run_request(dataset, name, seed, params, search="none", backbone=backbone), replicate=replicate,
                          stage="ablation")
        jobs.append(Job(request, str(paths.root), str(slot)))
    return jobs, skipped, shared


def ablate(dataset: str, params: dict, paths: ProjectPaths, progress: bool = True,
           backbone: str | None = None) -> list[Path]:
    """`ablation_jobs` through params.yaml's launcher (`launch.launcher`: a local pool of `launch.workers`,
    one run per GPU, or a Slurm job array; zsl_bench/launchers.py), all under one thread setting. Runs done
    before are found again by their content key, and runs no longer asked for are removed. A variant that
    cannot run on the dataset's inputs, or that computes exactly the official configuration on them, is marked
    skipped, with one line saying why. The official configuration's slots point at the train stage's runs
    when those are the same computation (`shares_train_run`), which are then found, not trained again."""
    import shutil

    from zsl_bench.launchers import launch
    from zsl_bench.records import SHARED_FILE, SKIPPED_FILE, write_shared, write_skipped

    backbone = check_dataset(dataset, params, backbone)
    jobs, skipped, shared = ablation_jobs(dataset, params, paths, backbone)
    marked = {write_skipped(slot, name, dataset, why) for slot, (name, why) in skipped.items()}
    for job in jobs:
        (Path(job.slot) / SKIPPED_FILE).unlink(missing_ok=True)
    for slot, source in shared.items():
        write_shared(slot, source, "the train stage's run is this configuration (stages.shares_train_run)")
    root = paths.runs_of(dataset, backbone, "ablation")
    for marker in [p for p in root.glob(f"*/seed*/{SHARED_FILE}") if p.parent not in shared]:
        marker.unlink()   # its configuration runs here again (a grid was added, or the method left train)
    folders = launch(jobs, params, progress=progress, desc=f"ablate {section(params, 'ablate', 'method')}")
    root.mkdir(parents=True, exist_ok=True)   # the stage's DVC output, even with nothing to run
    for folder in folders:
        prune_slot(folder)                     # keeps the scoring variants read off the run
    slots = {f.parent for f in folders}
    for stale in [p for p in root.glob("*/seed*/*") if p.is_dir() and p.parent not in slots]:
        shutil.rmtree(stale)
    for marker in [p for p in root.glob(f"*/seed*/{SKIPPED_FILE}") if p.parent not in marked]:
        marker.unlink()   # a variant or seed no longer asked for
    return folders
