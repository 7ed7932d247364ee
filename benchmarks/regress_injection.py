"""How small a degradation `zsl-bench regress` catches, per method and mode: proof by injection.

Each injection is a known degradation of one method, made through its hyperparameters in a copy of
regress/params.yaml (the method's code is untouched): its learning rate scaled, its last epochs dropped, or (the
closed forms) its regulariser moved. The copy runs that method alone, on the same prepared data, backbone and
features as the CI configuration (one upstream for all injections: only `train`/`methods` differ), and
its numbers are checked against regress/golden.json in both modes. A degradation the method's own validation
selection absorbs (an epoch it would not have picked) moves nothing, and that is the right verdict.

    python benchmarks/regress_injection.py                       # every method, every injection (~40 min, 2 cores)
    python benchmarks/regress_injection.py --methods ale dazle --out benchmarks/results/regress_injection.md

Prints, per injection: the paired mean change of T1 and H (points), whether exact mode failed, whether
statistical mode failed (and on which metrics); then per method the smallest injection each mode detected.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zsl_bench import regress  # noqa: E402
from zsl_bench.io import read_json  # noqa: E402

# kind → (hyperparameter, how the injection changes it, sizes from small to large)
LR_SCALES = (0.9, 0.75, 0.5)
EPOCH_DROPS = (1, 2)


def injections(method: str, defaults: dict) -> list[tuple[str, dict]]:
    """(label, hparam overrides) of each injection that applies to `method`, smallest first per kind."""
    out = []
    lr = next((k for k in ("lr", "classifier_lr") if k in defaults), None)
    if lr:
        out += [(f"{lr} x{f}", {lr: defaults[lr] * f}) for f in LR_SCALES]
    if "epochs" in defaults:
        out += [(f"epochs -{d}", {"epochs": defaults["epochs"] - d}) for d in EPOCH_DROPS if defaults["epochs"] - d >= 1]
    if "log10_alpha" in defaults:   # ESZSL
        out += [(f"log10_alpha +{d}", {"log10_alpha": defaults["log10_alpha"] + d}) for d in (0.1, 0.25, 0.5)]
    if "lambda" in defaults:        # SAE
        out += [(f"lambda x{f}", {"lambda": defaults["lambda"] * f}) for f in (0.9, 0.75, 0.5)]
    return out


def power(deltas: list[float], tol: float, change: float = 2.0) -> float:
    """P(|change + noise| > tol) for noise ~ N(0, se²), se = rms(deltas)/√n (1.0 when se is 0 and change > tol)."""
    from statistics import NormalDist

    se = math.sqrt(sum(d * d for d in deltas) / len(deltas)) / math.sqrt(len(deltas))
    if se == 0:
        return float(change > tol)
    z = NormalDist()
    return z.cdf((change - tol) / se) + z.cdf((-change - tol) / se)


def injected_params(base: dict, method: str, overrides: dict) -> dict:
    p = copy.deepcopy(base)
    p["train"]["methods"] = [method]
    entry = p["methods"].setdefault(method, {}) or {}
    hp = (entry.get("hparams") or {}).get("synthetic", {})
    entry["hparams"] = {"synthetic": {**hp, **overrides}}
    p["methods"][method] = entry
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="*", help="methods to inject into (default: every trained method of the "
                                                 "golden file)")
    ap.add_argument("--workdir", default=str(REPO / ".regress-injection"),
                    help="work folder (default: its own, so that pruning the injected runs' slots never removes "
                         "the runs `zsl-bench regress` reuses in .regress/)")
    ap.add_argument("--out", help="also write the table here (markdown)")
    args = ap.parse_args(argv)

    from zsl_bench.registry import get_method

    params_file, golden_file = regress.config_paths(REPO)
    golden = read_json(golden_file)
    base = yaml.safe_load(params_file.read_text())
    methods = args.methods or sorted(golden["datasets"]["synthetic"])
    unknown = sorted(set(methods) - set(golden["datasets"]["synthetic"]))
    if unknown:
        ap.error(f"{golden_file} has no {', '.join(unknown)}; it has {', '.join(sorted(golden['datasets']['synthetic']))}")
    workdir = Path(args.workdir)
    rows, smallest = [], {}
    for method in methods:
        configured = ((base["methods"].get(method) or {}).get("hparams") or {}).get("synthetic")
        defaults = get_method(method).default_hparams("synthetic", configured)
        g = {"datasets": {"synthetic": {method: golden["datasets"]["synthetic"][method]}}}
        for label, overrides in injections(method, defaults):
            t = time.time()
            file = workdir / "injection" / "params.yaml"
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(yaml.safe_dump(injected_params(base, method, overrides)))
            now = regress.measured(regress.run_ci_configuration(file, workdir, progress=False))
            exact_ok, _ = regress.check_exact(now, g)
            stat_ok, lines = regress.check_statistical(now, g)
            moved = [ln.split()[1] for ln in lines if ln.endswith("MOVED")]
            d = {k: sum(v) / len(v) for k, v in regress.per_seed_deltas(
                now["synthetic"][method], g["datasets"]["synthetic"][method], "last_seeds").items()}
            rows.append((method, label, d["T1"], d["H"], not exact_ok, not stat_ok, ",".join(moved)))
            for mode, caught in (("exact", not exact_ok), ("statistical", not stat_ok)):
                if caught:
                    smallest.setdefault((method, mode, label.split()[0]), label)
            print(f"{method:10} {label:18} ΔT1 {d['T1']:+6.2f} ΔH {d['H']:+6.2f}  exact: "
                  f"{'FAIL' if not exact_ok else 'pass'}  statistical: {'FAIL ' + ','.join(moved) if not stat_ok else 'pass'}"
                  f"  ({time.time() - t:.0f} s)", flush=True)
    table = [f"| method | injection | ΔT1 ({regress.STAT_POLICY}) | ΔH ({regress.STAT_POLICY}) | exact mode | "
             "statistical mode |", "|---|---|---|---|---|---|"]
    table += [f"| {m} | {lab} | {t1:+.2f} | {h:+.2f} | {'fails' if e else 'passes'} | "
              f"{'fails (' + mv + ')' if s else 'passes'} |" for m, lab, t1, h, e, s, mv in rows]
    table += ["", "Statistical mode's power against a true change of 2 points, from the calibration (per-seed "
              "environment-only differences d, n seeds: tolerance τ = max(floor, Z·rms(d)/√n), standard error "
              "se = rms(d)/√n, power = Φ((2 − τ)/se) + Φ((−2 − τ)/se)):", "",
              "| method | T1 τ | T1 power | H τ | H power |", "|---|---|---|---|---|"]
    for method in methods:
        e = golden["datasets"]["synthetic"][method]
        cells = []
        for k in ("T1", "H"):
            cells += [f"{e['tolerance'][k]:.2f}", f"{power(e['environment_deltas'][k], e['tolerance'][k]):.3f}"]
        table.append(f"| {method} | " + " | ".join(cells) + " |")
    text = "\n".join(table)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(f"# Injected degradations vs `zsl-bench regress` (golden written "
                                  f"{golden['written']})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
