"""`zsl-bench plan`: what the configured benchmark will cost before any of it runs.

The work is counted exactly as the stages would do it: the train and ablate stages' jobs (`stages.train_jobs`,
`stages.ablation_jobs`), each run's configurations × (validation folds + the trainval refit) as the evaluator
sweeps them, and each fit's training steps from the method's own schedule at that fit's number of images
(`steps_of_fit`). A step is one batch through the method's update (Mg-MRN's three sequential branch updates
are one step), which is what the benchmarks time.

The seconds a step takes come from, in this order:

1. runs in this project made on the same device kind (their provenance.json holds the steps and the wall
   time: `record_actual`): the whole run, evaluation and loading included;
2. the method folder's `step_times.json`, written from a benchmark on that device kind
   (`benchmarks/record_step_times.py`): training steps alone, at the benchmark's shapes (CUB's);
3. the same for the nearest measured device kind (a GPU for a GPU), labelled as such.

A method without any is listed as unmeasured and left out of the totals, never guessed.
"""
from __future__ import annotations

import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

STEP_TIMES_FILE = "step_times.json"
PLAN_KEY = "plan"   # provenance.json's entry: the run's steps, device kind and what was estimated for it


# --- device kinds -------------------------------------------------------------------------------------------

def device_kind(device: str | None = None) -> str:
    """The kind of device a run trains on, as step times are recorded: a GPU by its model and memory
    (`h100-80gb` for "NVIDIA H100 80GB HBM3"), a CPU by its core count (`cpu-2core`)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return gpu_kind(torch.cuda.get_device_name(torch.device(device)))
    return f"cpu-{os.cpu_count() or 1}core"


def gpu_kind(name: str) -> str:
    words = [w for w in re.split(r"[\s_]+", name.lower()) if w not in ("nvidia", "tesla", "geforce")]
    text = " ".join(words)
    model = re.search(r"\b([a-z]+\d+[a-z]*)\b", text)
    memory = re.search(r"(\d+)\s*gb", text)
    slug = model.group(1) if model else "-".join(re.findall(r"[a-z0-9]+", text))[:24]
    return f"{slug}-{memory.group(1)}gb" if memory else slug


def is_gpu_kind(kind: str) -> bool:
    return not kind.startswith("cpu")


def kind_memory_gib(kind: str) -> float | None:
    """A GPU kind's memory as its name states it (`-80gb`), in GiB; None when the name does not say."""
    found = re.search(r"-(\d+)gb$", kind)
    return int(found.group(1)) * 1e9 / 2**30 if found else None


def this_device_memory_gib() -> float | None:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None


# --- step times ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rate:
    """Seconds per training step of a method on a device kind, and where that figure comes from."""
    step_s: float
    source: str                          # a label for tables: what was measured, where
    whole_run: bool                      # True: wall time of whole runs (evaluation included) ÷ their steps
    batch: int | None = None
    peak_memory_gib: float | None = None
    peak_memory_half_batch_gib: float | None = None


def recorded_step_times(method: str) -> dict:
    """{device kind: {precision: entry}} for `method` (with its variant: `mgmrn.image`) from its folder's
    step_times.json; {} when it has none."""
    from zsl_bench.io import read_json
    from zsl_bench.registry import get_method

    cls = get_method(method)
    path = Path(sys.modules[cls.__module__].__file__).parent / STEP_TIMES_FILE
    if not path.is_file():
        return {}
    table = read_json(path)
    return {kind: entries[method] for kind, entries in table.items()
            if not kind.startswith("_") and method in entries}


def benchmark_rate(method: str, kind: str, precision: str) -> Rate | None:
    """The benchmark's step time of `method` on `kind`, else on the nearest measured kind (labelled); at
    `precision`, else fp32's (labelled: reduced precision rarely makes a step slower)."""
    table = recorded_step_times(method)
    if precision != "fp32" and not any(precision in entry for entry in table.values()):
        rate = benchmark_rate(method, kind, "fp32")
        return None if rate is None else replace(rate, source=f"{rate.source}; fp32's, none in {precision}")
    candidates = [k for k in table if precision in table[k]]
    if kind in candidates:
        chosen, label = kind, f"benchmark on {kind}"
    else:
        same_class = sorted((k for k in candidates if is_gpu_kind(k) == is_gpu_kind(kind)),
                            key=lambda k: (k.split("-")[0] != kind.split("-")[0], k))
        if not same_class:
            return None
        chosen, label = same_class[0], f"benchmark on {same_class[0]} (none on {kind})"
    entry = table[chosen][precision]
    return Rate(step_s=float(entry["step_s"]), source=f"{label}, {table[chosen].get('shapes', 'its shapes')}",
                whole_run=False, batch=entry.get("batch"), peak_memory_gib=entry.get("peak_memory_GiB"),
                peak_memory_half_batch_gib=entry.get("peak_memory_half_batch_GiB"))


def measured_rates(paths, datasets: dict | None = None) -> dict:
    """(method, dataset/backbone, device kind, precision) → (median seconds per step, number of runs) over this
    project's finished runs: their wall time ÷ their steps. A run's device kind is what its provenance says
    (`record_actual`), else its GPU's name, else this machine's CPU when this host made it; a resumed run
    (its wall time covers only the last part) is left out."""
    import platform

    from zsl_bench.io import DataError
    from zsl_bench.provenance import read_provenance
    from zsl_bench.records import find_records

    found: dict[tuple, list[float]] = {}
    datasets = {} if datasets is None else datasets   # prepared datasets by name, loaded once
    for record in find_records(paths.runs):
        prov = read_provenance(record.folder)
        wall = (prov.get("resources") or {}).get("wall_s")
        if not wall or prov.get("resumed") or record.get("score_variant_of"):
            continue
        facts = prov.get(PLAN_KEY)
        if facts is None and (record["environment"].get("gpu") or (prov.get("host") or {}).get("node") == platform.node()):
            try:
                facts = run_facts(record, paths, datasets)
            except (DataError, KeyError, ValueError):   # its dataset no longer prepared, an older record layout
                continue
        if facts and facts.get("steps"):
            key = (record["method"], facts["feature_set"], facts["device_kind"], facts["precision"])
            found.setdefault(key, []).append(float(wall) / facts["steps"])
    return {k: (statistics.median(v), len(v)) for k, v in found.items()}


def run_facts(record, paths, datasets: dict | None = None) -> dict:
    """What `plan` counts of a finished run, from its record: device kind, feature set, precision, steps."""
    from zsl_bench.registry import get_method

    spec = record["key_spec"]
    dataset = _prepared(spec["dataset"], paths, {} if datasets is None else datasets)
    _, steps = run_steps(get_method(spec["method"]), spec["configs"], *fit_sizes(dataset, spec["folds"]))
    env = record["environment"]
    kind = gpu_kind(env["gpu"]) if str(env.get("device")).startswith("cuda") and env.get("gpu") else device_kind("cpu")
    return {"device_kind": kind, "feature_set": f"{spec['dataset']}/{spec['backbone']}",
            "precision": spec["training"]["precision"], "steps": steps}


# --- work -----------------------------------------------------------------------------------------------

def steps_of_fit(method_cls, hparams: dict, n: int) -> int:
    """Training steps of one fit of `method_cls` with `hparams` on `n` images: the last step its loop runs to.
    Read from the schedule the method itself uses (`checkpoint_steps`, `steps_per_epoch`), else the common
    rule for its hyperparameters (episodes: `batches_per_epoch`, or n / (ways × shots); shuffled passes:
    n / batch_size, per epoch); a method without epochs solves in closed form: one step."""
    probe = method_cls.__new__(method_cls)   # the schedule reads hparams only: no network is built
    probe.hparams = dict(hparams)
    if callable(getattr(probe, "checkpoint_steps", None)):
        return max(probe.checkpoint_steps(n))
    epochs = int(hparams.get("epochs") or 0)
    if not epochs:
        return 1
    try:
        per_epoch = probe.steps_per_epoch(n)
    except (AttributeError, NotImplementedError, KeyError):
        if "ways" in hparams and hparams.get("sampler", "episodes") == "episodes":
            per_epoch = int(hparams.get("batches_per_epoch") or 0) or math.ceil(n / (hparams["ways"] * hparams["shots"]))
        else:
            per_epoch = max(math.ceil(n / int(hparams.get("batch_size") or n)), 1)
    return epochs * int(per_epoch)


def _prepared(name: str, paths, cache: dict):
    """The prepared dataset `name`, loaded once per `cache`."""
    from zsl_bench.data.dataset import load_dataset

    if name not in cache:
        cache[name] = load_dataset(paths.prepared(name))
    return cache[name]


def fit_sizes(dataset, folds) -> tuple[list[int], int]:
    """(train images of each validation fold in `folds`, trainval images) of a prepared dataset."""
    from zsl_bench.protocol import test_phase, validation_phase

    return [len(validation_phase(dataset, k).train_rows) for k in folds], len(test_phase(dataset).train_rows)


def run_steps(method_cls, configs: list[dict], fold_sizes: list[int], trainval: int) -> tuple[int, int]:
    """(fits, steps) of one run: every configuration fitted on each validation fold and refitted on trainval."""
    sizes = [*fold_sizes, trainval]
    return len(configs) * len(sizes), sum(steps_of_fit(method_cls, c, n) for c in configs for n in sizes)


@dataclass
class RunPlan:
    stage: str
    dataset: str
    backbone: str
    method: str
    seed: int
    fits: int
    steps: int
    done: bool = False
    rate: Rate | None = None
    exact: bool = True                  # False: counted from params.yaml before the data or features exist

    @property
    def estimate_s(self) -> float | None:
        return None if self.rate is None else self.steps * self.rate.step_s


@dataclass
class Plan:
    device_kind: str
    precision: str
    runs: list[RunPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _sizes(dataset_name: str, folds, paths, backbone_spec: dict, cache: dict):
    """(fold train sizes, trainval size, exact?) of a dataset: from its prepared folder, else from the split
    sizes its source declares (each fold's fit then counted at trainval's size: an upper bound)."""
    from zsl_bench.data import source_module
    from zsl_bench.protocol import resolve_folds

    if (paths.prepared(dataset_name) / "dataset.json").is_file():
        dataset = _prepared(dataset_name, paths, cache)
        return (*fit_sizes(dataset, resolve_folds(folds, dataset, backbone_spec)), True)
    sizes = getattr(source_module(dataset_name), "SIZES", None)
    if sizes is None:
        return None
    n_folds = 3 if folds == "auto" else len(folds)   # the GBU split's three validation folds
    return [sizes.trainval] * n_folds, sizes.trainval, False


def plan(params: dict, paths, kind: str | None = None) -> Plan:
    """Every run the train and ablate stages would make, with its steps and estimated seconds on `kind`
    (default: this machine's device)."""
    import contextlib
    import io

    from zsl_bench.evaluator import grid, random_configs
    from zsl_bench.params import feature_sets, section
    from zsl_bench.protocol import search_mode
    from zsl_bench.records import REPLICATE_LABEL
    from zsl_bench.registry import get_method
    from zsl_bench.runner import plan_run
    from zsl_bench.stages import ablation_jobs, train_jobs
    from zsl_bench.training import resolve_precision

    train = section(params, "train")
    here = device_kind(None if train["device"] == "auto" else train["device"])
    kind = kind or here
    precision = resolve_precision(train["precision"], "cuda" if is_gpu_kind(kind) else "cpu")
    if kind != here and train["precision"] == "auto" and is_gpu_kind(kind):
        # "auto" picks bf16 where the GPU has it: every kind since Ampere; fp16 on the older ones named here.
        precision = "fp16" if kind.split("-")[0] in ("v100", "t4", "p100", "k80") else "bf16"
    out = Plan(kind, precision)
    datasets: dict = {}
    measured = measured_rates(paths, datasets)
    for dataset, backbone in feature_sets(params):
        has_inputs = paths.features(dataset, backbone).is_dir() and paths.prepared(dataset).is_dir()
        with contextlib.redirect_stderr(io.StringIO()) as said:   # the skip lines: one note per method below
            jobs = (train_jobs(dataset, params, paths, backbone=backbone, inputs_checked=has_inputs)
                    + ablation_jobs(dataset, params, paths, backbone=backbone, inputs_checked=has_inputs)[0])
        out.notes += [line for line in said.getvalue().splitlines() if line.startswith("skipped")]
        if not has_inputs:
            out.notes.append(f"{dataset}/{backbone}: not prepared and extracted yet, so counted from params.yaml: "
                             "every method counted (which ones the features serve is known after `extract`)")
        spec = ((params.get("backbone") or {}).get(dataset) or {}).get(backbone) or {}
        for job in {job.slot: job for job in jobs}.values():   # an ablation row the train stage runs: counted once
            r, cls = job.request, get_method(job.request.method)
            done = False
            if has_inputs:   # exact: the run as the runner resolves it (its dataset loaded there already)
                planned = plan_run(r, paths, progress=False, slot=Path(job.slot))
                configs, done = planned.evaluator.configs, planned.folder.is_dir()
                sizes = (*fit_sizes(planned.evaluator.dataset, planned.evaluator.folds), True)
            else:
                space = cls.search_space(dataset) if r.search_space is None else dict(r.search_space)
                mode = search_mode(r.search)
                configs = (random_configs(r.defaults, space, int(mode.split(":")[1])) if mode.startswith("random:")
                           else grid(r.defaults, space if mode != "none" else {}))
                sizes = _sizes(dataset, r.folds, paths, spec, datasets)
            if sizes is None:
                out.notes.append(f"{dataset}: its size is known once prepared (`dvc repro prepare@{dataset}`)")
                break
            fits, steps = run_steps(cls, configs, sizes[0], sizes[1])
            # A method that computes on the CPU (ESZSL, SAE, ALE) does so on a GPU machine too: this CPU's rate.
            on_cpu = cls.device == "cpu" and is_gpu_kind(kind)
            rate = _rate(r.method, f"{dataset}/{backbone}", device_kind("cpu") if on_cpu else kind,
                         "fp32" if on_cpu else precision, measured)
            if rate is not None and on_cpu:
                rate = replace(rate, source=f"on the CPU, as this one: {rate.source}")
            name = r.method + (REPLICATE_LABEL if r.replicate else "")
            out.runs.append(RunPlan(r.stage, dataset, backbone, name, r.seed, fits, steps, done, rate,
                                    exact=sizes[2] and has_inputs))
    return out


def _rate(method: str, feature_set: str, kind: str, precision: str, measured: dict) -> Rate | None:
    """Runs here, else the benchmark; for a variant with neither that keeps its base's inputs (an ablation
    switch), its base method's, labelled."""
    from zsl_bench.registry import get_method

    if (method, feature_set, kind, precision) in measured:
        s, n = measured[method, feature_set, kind, precision]
        return Rate(s, f"{n} run{'s' * (n > 1)} here on {kind}", whole_run=True)
    rate = benchmark_rate(method, kind, precision)
    base, _, variant = method.partition(".")
    if rate is None and variant and "input_kind" not in get_method(base).variants.get(variant, {}):
        rate = _rate(base, feature_set, kind, precision, measured)
        if rate is not None:
            rate = replace(rate, source=f"{base}'s: {rate.source}")
    return rate


def makespan_s(durations: list[float], workers: int) -> float:
    """Wall time of independent runs on `workers` devices, handed out in the stages' order, each to the
    first free device (what the local pool, the multi_gpu launcher or a Slurm array of that width does)."""
    loads = [0.0] * max(workers, 1)
    for d in durations:
        loads[loads.index(min(loads))] += d
    return max(loads) if durations else 0.0


# --- what a run measured --------------------------------------------------------------------------------------

def record_actual(folder: Path, paths, since: float) -> None:
    """Add to a run's provenance.json what `plan` counts of it (device kind, steps) and what the benchmark
    estimated (seconds and their source), beside the wall time it took, when the run was made after `since`
    (not found done). Informative only, like the rest of provenance.json: it never reaches a record or a key."""
    from zsl_bench.io import DataError
    from zsl_bench.provenance import read_provenance, write_provenance
    from zsl_bench.records import RunRecord

    prov = read_provenance(folder)
    if prov.get("created_unix", 0) < since or PLAN_KEY in prov:
        return
    record = RunRecord.read(Path(folder))
    try:
        facts = run_facts(record, paths)
    except (DataError, KeyError, ValueError) as e:   # informative only: a finished run never fails for it
        print(f"note: {folder}: its steps not recorded for `zsl-bench plan` ({e})", file=sys.stderr)
        return
    rate = benchmark_rate(record["method"], facts["device_kind"], facts["precision"])
    prov[PLAN_KEY] = {**facts, "estimate_s": None if rate is None else round(facts["steps"] * rate.step_s, 1),
                      "estimate_source": None if rate is None else rate.source}
    write_provenance(folder, prov)


# --- the table ------------------------------------------------------------------------------------------------

MEMORY_HEADROOM = 0.9   # of the device's memory a run may plan to use (the allocator's fragmentation, CUDA context)


def micro_batch_advice(rate: Rate | None, memory_gib: float | None) -> str:
    """Whether the method's official batch fits `memory_gib`, else the `train.micro_batch` that would. Peak
    memory is modelled as fixed + per-sample × batch: from the benchmark's two batch sizes when it measured
    both, else as proportional to the batch (labelled: then the advice is optimistic)."""
    if rate is None or rate.peak_memory_gib is None or not rate.batch:
        return "—"
    peak, batch = rate.peak_memory_gib, rate.batch
    if memory_gib is None:
        return f"{peak:.1f} GiB at batch {batch}"
    budget = MEMORY_HEADROOM * memory_gib
    if peak <= budget:
        return f"{peak:.1f} of {memory_gib:.0f} GiB at batch {batch}: fits"
    if rate.peak_memory_half_batch_gib is not None and batch >= 2:
        per_sample = (peak - rate.peak_memory_half_batch_gib) / (batch - batch // 2)
        fixed, how = peak - per_sample * batch, ""
    else:
        per_sample, fixed, how = peak / batch, 0.0, " (memory taken ∝ batch: may need less)"
    micro = int((budget - fixed) // per_sample) if per_sample > 0 else 0
    if micro < 1:
        return f"{peak:.1f} GiB at batch {batch}: does not fit in {memory_gib:.0f} GiB even one image at a time"
    return (f"{peak:.1f} GiB at batch {batch} > {budget:.0f}: set train.micro_batch: {min(micro, batch - 1)}{how}; "
            "BatchNorm and in-batch statistics then see each part alone")


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "unmeasured"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def render(p: Plan, devices: int = 1, memory_gib: float | None = None) -> str:
    """The plan as markdown: per stage, feature set and method the runs, their work and estimated time, the
    memory advice; then the totals and the wall time on `devices` devices at once."""
    todo = [r for r in p.runs if not r.done]
    lines = [f"# Plan: {len(p.runs)} runs ({len(p.runs) - len(todo)} done, {len(todo)} to run) on {p.device_kind}, "
             f"precision {p.precision}", "",
             "Estimates, not measurements: steps are counted from each method's schedule, seconds per step come "
             "from the source named in each row. Only the runs still to run are summed.", "",
             "| stage | features | method | runs to run | fits / run | steps / run | s / step (source) | time to run "
             "| memory at the official batch |", "|---|---|---|---|---|---|---|---|---|"]
    sources: list[str] = []   # footnotes: where each row's seconds per step come from
    groups: dict[tuple, list[RunPlan]] = {}
    for r in p.runs:
        groups.setdefault((r.stage, f"{r.dataset}/{r.backbone}", r.method), []).append(r)
    for (stage, features, method), runs in groups.items():
        first, left = runs[0], [r for r in runs if not r.done]
        seconds = None if first.rate is None else sum(r.estimate_s for r in left)
        steps = sorted({r.steps for r in runs})
        rate = "—"
        if first.rate is not None:
            source = first.rate.source + ("" if first.rate.whole_run else "; training steps only")
            sources += [source] if source not in sources else []
            rate = f"{first.rate.step_s:.4g} [{sources.index(source) + 1}]"
        lines.append(f"| {stage} | {features} | {method} | {len(left)} of {len(runs)} | {first.fits} | "
                     f"{'≤ ' if not first.exact else ''}{'/'.join(map(str, steps))} | {rate} | "
                     f"{_hours(seconds) if left else '— (done)'} | "
                     f"{micro_batch_advice(first.rate, memory_gib)} |")
    lines += ["", *(f"[{i}] {source}" for i, source in enumerate(sources, 1))]
    known = [r.estimate_s for r in todo if r.rate is not None]
    unmeasured = sorted({r.method for r in todo if r.rate is None})
    lines += ["", f"Total to run: {_hours(sum(known))} of {p.device_kind} time over {len(known)} runs"
              + (f"; not estimated: {', '.join(unmeasured)} (no step time measured on this kind: the README's "
                 "Benchmarks, then `benchmarks/record_step_times.py`)" if unmeasured else "") + "."]
    for n in sorted({1, devices}):
        lines.append(f"On {n} device{'s' * (n > 1)} at once (the local pool or multi_gpu launcher, or a Slurm array "
                     f"of {n}): ≈ {_hours(makespan_s(known, n))} wall, each run in the stages' order to the first free device.")
    if p.notes:
        lines += ["", *(f"- {n}" for n in p.notes)]
    return "\n".join(lines)


def actual_vs_estimate(paths) -> str | None:
    """One line on how past estimates fared: the runs here whose provenance holds both."""
    from zsl_bench.provenance import read_provenance
    from zsl_bench.records import find_run_folders

    ratios = []
    for folder in find_run_folders(paths.runs):
        prov = read_provenance(folder)
        est, wall = (prov.get(PLAN_KEY) or {}).get("estimate_s"), (prov.get("resources") or {}).get("wall_s")
        if est and wall:
            ratios.append(wall / est)
    if not ratios:
        return None
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return (f"Past estimates: over {len(ratios)} runs here, actual wall time ÷ the benchmark's estimate had median "
            f"{q[1]:.2f} (quartiles {q[0]:.2f}–{q[2]:.2f}); the runs' own rates are used where they exist.")
