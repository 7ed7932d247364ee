"""DVC stage `train@<dataset>-<method>-<seed>` (see dvc.yaml)."""
import sys

from pipelines._common import run_stage
from zsl_bench import stages

if __name__ == "__main__":
    dataset, method, seed = sys.argv[1:4]
    run_stage(stages.train, dataset, method, int(seed))
