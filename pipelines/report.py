"""DVC stage `report` (see dvc.yaml)."""
from pipelines._common import run_stage
from zsl_bench import stages

if __name__ == "__main__":
    run_stage(stages.report)
