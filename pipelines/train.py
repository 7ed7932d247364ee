"""DVC stage `train@<dataset>` (see dvc.yaml): every method × seed of params.yaml through the launcher.

`python -m zsl_bench_pipelines.train DATASET METHOD SEED` runs one of those runs in this process instead (by hand, or
under torchrun: README "Scaling out"); it writes the same slot the stage would.
"""
import sys

from zsl_bench_pipelines._common import run_stage
from zsl_bench import stages

if __name__ == "__main__":
    if len(sys.argv) == 2:
        run_stage(stages.train, sys.argv[1])
    elif len(sys.argv) == 4:
        dataset, method, seed = sys.argv[1:4]
        run_stage(stages.train_run, dataset, method, int(seed))
    else:
        sys.exit("usage: python -m zsl_bench_pipelines.train DATASET [METHOD SEED]")
