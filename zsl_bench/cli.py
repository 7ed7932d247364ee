"""`zsl-bench`: thin verbs over the core. Heavy imports happen inside the verbs, so --help is instant."""
from __future__ import annotations

import argparse
import sys

from zsl_bench.policies import HEADLINE_POLICY, SELECTION_POLICIES   # numpy only: --help stays fast

DESCRIPTION = """\
zsl-bench: zero-shot learning benchmarks under one honest protocol (GBU proposed split; per-class
top-1 T1, GZSL U/S/H, AUSUC; hyperparameters, epochs and calibration γ chosen on validation).

The main job is `dvc repro` (see params.yaml and dvc.yaml). These verbs cover the rest."""

EPILOG = """\
examples:
  dvc repro                                  run the whole pipeline on params.yaml's datasets
  zsl-bench compare mgmrn transzero          two methods side by side: mean ± std, paired Δ, 95 % bootstrap CI
  zsl-bench compare eszsl sae ale --selection oracle --format latex
  zsl-bench status                           every configured run: current, stale (and why) or missing, and its cost
  zsl-bench report                           rebuild reports/ from the run records
  zsl-bench regress                          CI: rerun the small CI configuration; exact or statistical check
  zsl-bench train --method ale --seed 3      one extra run (needs prepared data and features)
  zsl-bench sweep --launcher slurm           every configured run on a Slurm cluster; dvc repro adopts them
  zsl-bench methods transzero                its hyperparameters per dataset (set them in params.yaml)
  zsl-bench datasets                         what each dataset needs, what is here, how to get the rest
  zsl-bench download CUB --from ~/CUB_200_2011.tgz
  zsl-bench prepare CUB; zsl-bench backbone CUB; zsl-bench extract CUB   one stage, outside DVC
  mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db   then "Model training" at the top of the sidebar
"""


def _parser() -> argparse.ArgumentParser:
    # One flat list of declarations, verb by verb: longer than 60 lines, but read top to bottom like --help.
    p = argparse.ArgumentParser(prog="zsl-bench", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of user errors too (bugs always show one); or ZSL_BENCH_DEBUG=1")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    c = sub.add_parser("compare", help="compare methods: mean ± std over seeds, paired differences, bootstrap CIs",
                       description="Compare methods under one selection policy. Per dataset and metric: mean ± std "
                                   "over seeds (sample std, ddof = 1) and n; for every other method the per-seed "
                                   "paired difference to the FIRST method with a 95 % paired bootstrap interval over "
                                   "test images (* where it excludes 0); on real datasets the published numbers "
                                   "with their source. Reads the run records below runs/ (or, with --source mlflow, "
                                   "a tracking server); both give the same table.")
    c.add_argument("methods", nargs="+", metavar="METHOD", help="method names as in `zsl-bench methods` "
                   "(variants as mgmrn.levels1); the first is the reference. METHOD@BACKBONE rows set methods on "
                   "different backbones side by side (zerodino@vit mgmrn@resnet10t: one table per dataset)")
    c.add_argument("--dataset", help="only this dataset (default: every dataset with runs)")
    c.add_argument("--backbone", nargs="+", metavar="NAME",
                   help="only these backbones (params.yaml `features`; default: every one with runs, a table per "
                        "dataset and backbone). With ONE method and several backbones, the backbones are compared: "
                        "rows METHOD@BACKBONE, paired by seed on the same test images, the first the reference")
    c.add_argument("--selection", choices=SELECTION_POLICIES, default=HEADLINE_POLICY,
                   help="selection policy: val (headline, validation-selected), paper (each method's own published "
                        "rule: set the published numbers against this), oracle (test-selected upper bound), last "
                        "(defaults, final checkpoint); default: %(default)s")
    c.add_argument("--format", choices=("md", "csv", "latex", "json"), default="md", help="default: %(default)s")
    c.add_argument("--source", choices=("auto", "mlflow", "records"), default="auto",
                   help="where to read runs: auto/records = the run records below runs/; mlflow = the tracking "
                        "server in MLFLOW_TRACKING_URI (default: params.yaml's tracking.uri, else the project's "
                        "mirror) through MlflowClient; default: %(default)s")
    c.add_argument("--runs", help="runs folder for --source records (default: <project>/runs)")

    r = sub.add_parser("report", help="rebuild reports/ (tables, figures) from the run records params.yaml names",
                       description="Rebuild reports/ from the run records (what the report stage of `dvc repro` "
                                   "does) and bring the MLflow mirror in line with runs/.")
    r.add_argument("--no-mlflow", action="store_true", help="do not touch the MLflow mirror")
    r.add_argument("--mlflow-sync", action="store_true",
                   help="only rebuild the MLflow mirror from the run records below runs/: create missing runs, "
                        "replace runs mirrored by an older zsl-bench, delete (soft) runs whose folder is gone")

    t = sub.add_parser("train", help="one run of a method (the train stage, outside DVC)",
                       description="Evaluate one method on one dataset and seed under the protocol, writing a run "
                                   "folder below runs/. Uses params.yaml's train settings unless overridden.")
    t.add_argument("--method", required=True)
    t.add_argument("--dataset", default="synthetic")
    t.add_argument("--backbone", help="a backbone of the dataset (params.yaml `backbone.<dataset>`; default: its "
                   "first in `features`)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-search", action="store_true", help="default hyperparameters only (still selects epoch/γ)")

    g = sub.add_parser("regress", help="rerun the CI configuration; fail when an accuracy moved",
                       description="Run regress/params.yaml (every method, 3 seeds, small synthetic data, CPU, one "
                                   "thread per run, a float64 backbone) in a work folder and compare T1, U, S, H and "
                                   "AUSUC with regress/golden.json. Exact mode (when this machine's float "
                                   "environment is the golden file's: Python, numpy, scipy, torch, torch's CPU "
                                   "kernels, BLAS core type, threads): every seed's every number, validation-selected "
                                   "and at the final checkpoint, must be identical (within 1e-6 as a fraction); any "
                                   "move fails. Statistical mode (another environment, chosen by itself): per "
                                   "method and metric the paired mean over seeds of now - golden at the final "
                                   "checkpoint and default gamma must stay within a tolerance measured, at --update, "
                                   "from an environment-only perturbation. Exit 1 with a readable diff when a "
                                   "number moved. Prepared data, backbone and features in the work folder are "
                                   "rebuilt whenever the code, settings or environment that made them changed.")
    g.add_argument("--update", action="store_true",
                   help="rewrite regress/golden.json from this run and print what moved, for the commit message "
                        "(refused in another environment than the file's unless --adopt-environment)")
    g.add_argument("--recalibrate", action="store_true",
                   help="with --update: re-measure the statistical tolerances even if the old ones cover every "
                        "method and seed (a second run of the configuration, environment perturbed)")
    g.add_argument("--adopt-environment", action="store_true",
                   help="with --update: make this machine's environment the exact-mode reference")
    g.add_argument("--mode", choices=("auto", "exact", "statistical"), default="auto",
                   help="auto (default): exact when the environment matches the golden file's, else statistical")
    g.add_argument("--workdir", help="work folder (default: <project>/.regress)")

    m = sub.add_parser("methods", help="list the registered methods and what they declare",
                       description="Every registered method (entry points of the group `zsl_bench.methods`, this "
                                   "package's and any installed plugin's) with what it declares. With a name: its "
                                   "default hyperparameters and search grid per dataset, the keys params.yaml's "
                                   "`methods.<name>.hparams` and `.search_space` may set.")
    m.add_argument("name", nargs="?", help="show one method's hyperparameters")
    sub.add_parser("datasets", help="every dataset source: status, size on disk, and the command to get it")
    dl = sub.add_parser("download", help="download and verify the archives a dataset needs (no extraction)",
                        description="Fetch a dataset's archives into data/downloads/, resuming partial files and "
                                    "checking checksums. `dvc repro` then extracts and prepares them.")
    dl.add_argument("dataset", nargs="?", help="CUB, SUN or AWA2")
    dl.add_argument("--mirror", metavar="URL", help="a folder URL holding the same file names, tried first")
    dl.add_argument("--from", dest="from_paths", metavar="PATH", action="append", default=[],
                    help="an archive you already have (named as the original); repeatable")
    dl.add_argument("--no-images", dest="images", action="store_false", default=None,
                    help="only what methods on the xlsa17 res101 features need")
    dl.add_argument("--forget-checksum", metavar="FILE",
                    help="forget the sha256 recorded at FILE's first download (in data/downloads/checksums.json), "
                         "after you confirmed that a changed FILE is the one you want; the next use records the "
                         "new one. Needs no dataset.")
    st = sub.add_parser("status", help="every configured run as current, stale (and why) or missing, with the "
                        "compute it would take, before dvc repro spends it",
                        description="Per run params.yaml configures (train and ablate stages): current (its folder "
                                    "of today's key exists), stale (another run is in its slot: what changed — a code "
                                    "file, a params.yaml key, the dataset or the features) or missing, with the wall "
                                    "time it would take (the replaced run's, else the mean of the method's other "
                                    "seeds). Selection policies and reports are not part of a run: changing them "
                                    "leaves every run current. Trains nothing.")
    st.add_argument("--dataset", help="only this dataset (default: params.yaml's datasets)")
    pl = sub.add_parser("plan", help="before any work: the configured benchmark's runs, their training steps and "
                        "estimated time per method on a device kind, and the memory each needs",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="""\
Count the work params.yaml configures, as the stages will do it: the train and ablate stages' runs
(datasets × backbones × train.methods × seeds, and the ablations), each run's configurations ×
(validation folds + the trainval refit), each fit's steps from the method's schedule at its number of
images. Seconds per step: from this project's finished runs on the same device kind (whole runs), else
the method folder's step_times.json (a benchmark's training steps on that kind), else the nearest
measured kind, labelled; never guessed. Runs already done (found by their key) are not summed. Memory:
the benchmark's peak at the method's official batch against the device's, and the train.micro_batch
that would fit when it does not. Trains nothing. Before the data are prepared and extracted, counts are
from params.yaml (labelled ≤: each validation fit counted at trainval's size).""",
                        epilog="""\
examples:
  zsl-bench plan                                   this machine's device
  zsl-bench plan --device-kind h100-80gb --devices 8   a cluster allocation of eight H100s""")
    pl.add_argument("--device-kind", help="plan for this kind of device (e.g. h100-80gb, a100-40gb, cpu-16core; "
                    "default: this machine's)")
    pl.add_argument("--devices", type=int, default=1, help="also give the wall time on this many devices at once")
    pl.add_argument("--methods", nargs="+", metavar="METHOD", help="plan these methods on params.yaml's "
                    "datasets and seeds instead of train.methods and the ablations (variants too: mgmrn.image)")
    pl.add_argument("--gpu-memory", type=float, metavar="GIB", help="the device's memory (default: this GPU's, or "
                    "what the kind's name says)")
    w = sub.add_parser("sweep", help="run every configured train and/or ablation run through a launcher "
                                     "(local pool, one run per GPU, or a Slurm job array); dvc repro adopts them",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="""\
Run the runs `dvc repro` would train, in parallel beyond one machine: every train run params.yaml
configures (datasets × train.methods × train.seeds, the same requests and slots as the train stages)
and/or every ablation run (the ablate stages' runs), through a launcher (zsl_bench/launchers.py):

  local      a process pool on this machine (launch.workers at a time; null: one per core)
  multi_gpu  one run per GPU at a time, each process with CUDA_VISIBLE_DEVICES set to its GPU
             (launch.gpus, else CUDA_VISIBLE_DEVICES, else every GPU torch sees)
  slurm      one submitit job array on a Slurm cluster (launch.slurm: partition, timeout_min,
             gpus_per_node, cpus_per_task, mem_gb, array_parallelism; logs in launch.slurm.folder,
             default .submitit/<job id>/); a preempted or timed-out job is requeued and continues
             from its last checkpoint

Run folders are content-addressed (runs/<dataset>/<method>/seed<k>/<run key>/): afterwards `dvc repro`
finds each one by its key and adopts it without retraining, then builds the report. Needs the prepared
data and features (`dvc repro` up to extract, or `zsl-bench prepare/backbone/extract DATASET`).""",
                       epilog="""\
examples:
  zsl-bench sweep --dry-run                  list the jobs and where their run folders go
  zsl-bench sweep --launcher slurm           every train and ablation run as one Slurm job array
  zsl-bench sweep --only train --launcher multi_gpu
  dvc repro                                  then: adopts the runs, builds reports/""")
    w.add_argument("--launcher", choices=("local", "multi_gpu", "slurm"),
                   help="where the runs execute (default: params.yaml's launch.launcher)")
    w.add_argument("--only", choices=("train", "ablate"), help="only the train runs, or only the ablation runs "
                   "(default: both)")
    w.add_argument("--dry-run", action="store_true", help="list the jobs (and the runs that would be skipped); "
                   "run nothing")
    sub.add_parser("prepare", help="prepare a dataset (the prepare stage, outside DVC)").add_argument("dataset")
    for verb, what, about in (
            ("backbone", "train or describe a backbone (the backbone stage, outside DVC)",
             "What params.yaml's backbone.<dataset>.<name> says: train the small model on the validation fold's "
             "train images, or record the pretrained, xlsa17 or HDF5 source it names."),
            ("extract", "extract or import a backbone's features (the extract stage, outside DVC)",
             "Pooled vectors and maps (a ViT's patch tokens as maps) with the backbone (params.yaml's "
             "extract.<dataset>.<name>), or the xlsa17 res101 vectors / an HDF5 file imported as they are; resumes "
             "an interrupted extraction.")):
        stage = sub.add_parser(verb, help=what, description=about)
        stage.add_argument("dataset")
        stage.add_argument("backbone", nargs="?", help="the backbone's name (default: the dataset's first in "
                           "params.yaml `features`)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from zsl_bench import __version__

        print(__version__)
        return 0
    if args.verb is None:
        _parser().print_help()
        return 0
    from zsl_bench.errors import guarded

    return guarded(f"zsl-bench {args.verb}", VERBS[args.verb], args, debug=args.debug)


def _compare(args) -> int:
    from zsl_bench import report_stage
    from zsl_bench.compare import RENDERERS, compare
    from zsl_bench.io import ConfigError
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.registry import get_method
    from zsl_bench.run_results import load_results

    for name in args.methods:
        get_method(name.partition("@")[0])   # an unknown name stops here, naming the registered ones
    paths = ProjectPaths.here()
    params = load_params(paths) if (paths.root / "params.yaml").is_file() else {}
    if args.dataset and params and args.dataset not in params["datasets"]:
        raise ConfigError(f"unknown dataset {args.dataset!r}: params.yaml's datasets are "
                          f"{', '.join(params['datasets'])}")
    rows_at = [m.partition("@")[2] for m in args.methods if "@" in m]
    if rows_at and (len(rows_at) < len(args.methods) or args.backbone):
        raise ConfigError("compare: name every row METHOD@BACKBONE (e.g. zerodino@vit mgmrn@resnet10t), or none "
                          "and choose backbones with --backbone")
    if (args.backbone or rows_at) and params:
        from zsl_bench.params import feature_sets

        named = {b for d, b in feature_sets(params) if args.dataset in (None, d)}
        unknown = [b for b in (args.backbone or rows_at) if b not in named]
        if unknown:
            raise ConfigError(f"unknown backbone {', '.join(unknown)}: params.yaml's `features` name "
                              f"{', '.join(sorted(named))}{f' for {args.dataset}' if args.dataset else ''}")
    current, notice = _current_runs(params, paths) if params and not args.runs else (None, "")
    skipped = report_stage.skipped_runs(params, paths)[0] if params and not args.runs else {}
    source = "records" if args.runs else args.source
    from zsl_bench.tracking import configured_uri

    results, where = load_results(args.runs or paths.runs, configured_uri(params, paths), source, keep=current)
    if notice:
        print(notice, file=sys.stderr)
    seeds = (params.get("train") or {}).get("seeds")
    results, skipped, methods = _on_backbones(results, skipped, args)
    # Runs of these methods (on --dataset): the header counts the runs the table is made of, whatever the
    # source, and no run of any of them (and no recorded skip) is the same answer with or without --dataset.
    used = [r for r in results if r.method in methods]
    if not used and not any(m in methods for d, m in skipped):
        print(f"zsl-bench compare: no runs of {', '.join(args.methods)}"
              f"{f' on {args.dataset}' if args.dataset else ''} found ({where}): run `dvc repro` (or "
              f"`zsl-bench train`) first{'; the MLflow mirror is built by dvc repro' if source == 'mlflow' else ''}",
              file=sys.stderr)
        return 1
    comps = compare(used, methods, policy=args.selection, expected_seeds=len(seeds) if seeds else None,
                    skipped=skipped)
    print(RENDERERS[args.format](comps, methods, f"{where} ({len(used)} runs)"), end="")
    return 0


def _on_backbones(results: list, skipped: dict, args) -> tuple[list, dict, list]:
    """The results and skips `--dataset` and `--backbone` keep (compare groups by `<dataset>/<backbone>`), and
    the rows to compare: the methods; or, for one method on several backbones, `METHOD@BACKBONE` rows in one
    table per dataset (the same test images under each backbone, so seeds pair)."""
    from zsl_bench.compare import across_backbones

    rows = list(args.methods)
    if len(rows) == 1 and args.backbone and len(args.backbone) > 1:
        rows = [f"{rows[0]}@{b}" for b in args.backbone]
    if any("@" in row for row in rows):   # METHOD@BACKBONE rows: one table per dataset
        on = lambda label: args.dataset in (None, label.partition("/")[0])  # noqa: E731
        results = [r for r in results if on(r.dataset)]
        return (*across_backbones(results, {k: v for k, v in skipped.items() if on(k[0])}, rows), rows)

    def keep(label: str) -> bool:
        dataset, _, backbone = label.partition("/")
        return args.dataset in (None, dataset) and (not args.backbone or backbone in args.backbone)

    results = [r for r in results if keep(r.dataset) and r.method in rows]
    skipped = {(d, m): why for (d, m), why in skipped.items() if keep(d) and m in rows}
    return results, skipped, rows


def _current_runs(params: dict, paths) -> tuple[set, str]:
    """The run keys params.yaml makes current (newest per configured seed) and the notice about the rest."""
    from zsl_bench.records import newest_per_seed
    from zsl_bench.report_stage import configured_records, outside_notice, outside_records

    results, ablation = configured_records(params, paths)
    return ({r.run_key for r in newest_per_seed(results + ablation)},
            outside_notice(outside_records(paths, results + ablation)))


def _regress(args) -> int:
    from pathlib import Path

    from zsl_bench.paths import ProjectPaths
    from zsl_bench.regress import regress

    root = ProjectPaths.here().root
    code, text = regress(root, Path(args.workdir) if args.workdir else root / ".regress", update=args.update,
                         mode=args.mode, recalibrate=args.recalibrate, adopt_environment=args.adopt_environment)
    print(text)
    return code


def _report(args) -> int:
    from zsl_bench import report_stage
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths.here()
    if args.mlflow_sync:
        from zsl_bench.tracking import configured_uri, ui_hint

        params = report_stage.tracking_params(paths)
        uri = configured_uri(params, paths)
        created, deleted = report_stage.mlflow_sync(paths, params=params)
        print(f"MLflow mirror {uri}: {created} runs created, {deleted} deleted (soft; restorable)")
        print(f"To see them: {ui_hint(uri)}")
        return 0
    params = load_params(paths)
    if args.no_mlflow:
        params.setdefault("tracking", {})["mlflow"] = False
    for path in report_stage.report(params, paths):
        print(path)
    return 0


def _train(args) -> int:
    from zsl_bench import report_stage, stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths.here()
    params = load_params(paths)
    if args.no_search:
        params["train"]["search"] = "none"
    from zsl_bench.training import Distributed

    folder = stages.train_run(args.dataset, args.method, args.seed, params, paths, backbone=args.backbone,
                              skip_inapplicable=False)
    if not Distributed.current().is_main:
        return 0   # under torchrun: rank 0 wrote the run and mirrors it
    print(folder)
    if params["tracking"]["mlflow"]:
        report_stage.mlflow_sync(paths, params=params)
    return 0


def _sweep(args) -> int:
    """The train stages' runs and/or the ablate stages' runs through one launcher call (zsl_bench/launchers.py)."""
    from pathlib import Path

    from zsl_bench.launchers import launch, launch_settings
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.run_status import configured_jobs

    paths = ProjectPaths.here()
    params = load_params(paths)
    settings = launch_settings(params)
    launcher = args.launcher or settings["launcher"]
    # the ablation's official runs may be the train stage's own (stages.shares_train_run): each run once
    jobs = configured_jobs(params, paths, only=args.only)
    n_train = sum(j.request.stage == "train" for j in jobs)
    print(f"zsl-bench sweep: {len(jobs)} runs ({n_train} train, {len(jobs) - n_train} ablation) with the "
          f"{launcher} launcher")
    if args.dry_run:
        for job in jobs:
            print(f"  {job.request.stage:8s}  {job.describe():40s} -> {Path(job.slot).relative_to(paths.root)}")
        return 0
    if params["tracking"].get("mlflow"):   # create the experiment once, before the jobs fan out
        from zsl_bench.tracking import configured_uri, ensure_experiment

        ensure_experiment(configured_uri(params, paths), paths.mlflow_artifacts)
    folders = launch(jobs, params, launcher=launcher, desc="sweep")
    for folder in folders:
        print(folder)
    print(f"{len(folders)} run folders written or found, each named by its content key. `dvc repro` adopts them "
          "(no retraining) and builds the report.")
    return 0


def _reads_class_text(cls) -> bool:
    """Whether the method's default fit reads a CLIP store's class text (its first profile's arrays)."""
    from zsl_bench.features import CLASS_TEXT

    first = next(iter(cls.profiles), None)
    arrays = cls.feature_arrays(cls.profile(first)) if first else ()
    return any(a.startswith(CLASS_TEXT) for a in arrays)


def _methods(args) -> int:
    from zsl_bench.registry import available_methods, get_method

    if args.name:
        return _method_hparams(get_method(args.name))
    for name in available_methods():
        cls = get_method(name)
        caps = f" capabilities={','.join(sorted(cls.capabilities))}" if cls.capabilities else ""
        caps += " needs=token-maps (a ViT's)" if cls.requires_token_maps else ""
        caps += " needs=clip-class-text" if _reads_class_text(cls) else ""
        print(f"{name:12s} input={cls.input_kind:7s} device={cls.device:4s} "
              f"uses_unseen_semantics={str(cls.uses_unseen_semantics).lower():5s}{caps}  {cls.paper}")
        if cls.variants:
            print(f"{'':12s} variants: {', '.join(f'{name}.{v}' for v in cls.variants)}")
        if cls.score_variants:
            print(f"{'':12s} read off the same runs: {', '.join(f'{name}.{v}' for v in cls.score_variants)}")
    return 0


def _method_hparams(cls) -> int:
    import json

    per_dataset = any("calibration_gamma" in cls.profile(d) for d in cls.profiles)   # the authors' γ by dataset
    print(f"{cls.name}: {cls.paper}" + ("" if per_dataset else f"; official selection: {cls.official_selection()}"))
    for dataset in cls.profiles:
        label = "any other dataset" if dataset == "*" else dataset
        hparams = cls.default_hparams(dataset)
        if per_dataset:
            print(f"\n[{label}] official selection: {cls.official_selection(hparams)}")
        print(f"{'' if per_dataset else chr(10)}[{label}] defaults: {json.dumps(hparams)}")
        space = cls.search_space(dataset)
        print(f"[{label}] search grid: {json.dumps(space) if space else 'none (defaults only)'}")
    return 0


def _stage(args) -> int:
    """prepare, backbone, extract: the stage of that name on one dataset, as `dvc repro` would run it."""
    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths.here()
    stage = getattr(stages, args.verb)
    if args.verb == "prepare":
        print(stage(args.dataset, load_params(paths), paths))
    else:
        print(stage(args.dataset, load_params(paths), paths, name=args.backbone))
    return 0


def _datasets(args) -> int:
    from zsl_bench.catalog import datasets_text
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths.here()
    params = load_params(paths) if (paths.root / "params.yaml").is_file() else {}
    print(datasets_text(params, paths), end="")
    return 0


def _download(args) -> int:
    from zsl_bench.catalog import download
    from zsl_bench.io import ConfigError
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths.here()
    if args.forget_checksum:
        from zsl_bench.data.download import forget_checksum

        old = forget_checksum(paths.downloads, args.forget_checksum)
        print(f"forgot the sha256 {old['sha256']} recorded for {args.forget_checksum} on {old.get('recorded')}; "
              "the next download or `dvc repro` records the file's new one")
        return 0
    if not args.dataset:
        raise ConfigError("zsl-bench download: name a dataset (CUB, SUN or AWA2), or give --forget-checksum FILE")
    params = load_params(paths) if (paths.root / "params.yaml").is_file() else {}
    fetched = download(args.dataset, params, paths, args.mirror, args.from_paths, args.images)
    for path in fetched:
        print(path)
    if not fetched:
        print(f"{args.dataset} is generated offline by `dvc repro`; nothing to download")
    return 0


def _status(args) -> int:
    from zsl_bench.io import ConfigError
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.run_status import render, status

    paths = ProjectPaths.here()
    params = load_params(paths)
    if args.dataset and args.dataset not in params["datasets"]:
        raise ConfigError(f"zsl-bench status: {args.dataset} is not in params.yaml's datasets "
                          f"({', '.join(params['datasets'])})")
    print(render(status(params, paths, args.dataset)))
    return 0


def _plan(args) -> int:
    from zsl_bench import plan
    from zsl_bench.io import ConfigError
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    if args.devices < 1:
        raise ConfigError(f"--devices must be 1 or more, not {args.devices}")
    paths = ProjectPaths.here()
    params = load_params(paths)
    if args.methods:
        params = {**params, "train": {**params["train"], "methods": args.methods},
                  "ablate": {**(params.get("ablate") or {}), "variants": []}}
    p = plan.plan(params, paths, args.device_kind)
    memory = args.gpu_memory
    if memory is None and plan.is_gpu_kind(p.device_kind):
        here = plan.device_kind() == p.device_kind
        memory = plan.this_device_memory_gib() if here else plan.kind_memory_gib(p.device_kind)
    print(plan.render(p, args.devices, memory))
    past = plan.actual_vs_estimate(paths)
    if past:
        print(past)
    return 0


VERBS = {"plan": _plan, "status": _status, "compare": _compare, "regress": _regress, "report": _report, "train": _train, "sweep": _sweep,
         "methods": _methods, "prepare": _stage, "backbone": _stage, "extract": _stage, "datasets": _datasets,
         "download": _download}

if __name__ == "__main__":
    sys.exit(main())
