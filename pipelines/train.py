"""DVC stage `train@<dataset>-<backbone>` (see dvc.yaml): every method × seed of params.yaml through the launcher.

`python -m zsl_bench_pipelines.train DATASET BACKBONE METHOD SEED` runs one of those runs in this process instead (by hand, or
under torchrun: README "Scaling out"); it writes the same slot the stage would.
"""
import sys

from zsl_bench_pipelines._common import run_stage
from zsl_bench import stages

if __name__ == "__main__":
    # DATASET [BACKBONE]: the stage; DATASET [BACKBONE] METHOD SEED: one run. Without a backbone, the
    # dataset's first in params.yaml `features`.
    args = sys.argv[1:]
    if len(args) in (1, 2):
        run_stage(stages.train, args[0], backbone=args[1] if len(args) == 2 else None)
    elif len(args) in (3, 4):
        dataset, *backbone, method, seed = args
        run_stage(stages.train_run, dataset, method, int(seed), backbone=backbone[0] if backbone else None)
    else:
        sys.exit("usage: python -m zsl_bench_pipelines.train DATASET [BACKBONE] [METHOD SEED]")
