"""DVC stage `extract@<dataset>-<backbone>` (see dvc.yaml)."""
import sys

from zsl_bench_pipelines._common import run_stage
from zsl_bench import stages

if __name__ == "__main__":
    # DATASET [BACKBONE]: without a backbone, the dataset's first in params.yaml `features`
    run_stage(stages.extract, sys.argv[1], name=sys.argv[2] if len(sys.argv) > 2 else None)
