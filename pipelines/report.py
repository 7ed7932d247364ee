"""DVC stage `report` (see dvc.yaml)."""
from zsl_bench_pipelines._common import run_stage
from zsl_bench import report_stage

if __name__ == "__main__":
    run_stage(report_stage.report)
