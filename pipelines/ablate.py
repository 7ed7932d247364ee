"""DVC stage `ablate@<dataset>` (see dvc.yaml)."""
import sys

from zsl_bench_pipelines._common import run_stage
from zsl_bench import stages

if __name__ == "__main__":
    run_stage(stages.ablate, sys.argv[1])
