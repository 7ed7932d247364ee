"""Where things live in a zsl-bench project folder (one place for every path)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MARKERS = ("params.yaml", "dvc.yaml")


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` holding params.yaml or dvc.yaml; else `start` itself."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if any((folder / m).is_file() for m in MARKERS):
            return folder
    return start


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @classmethod
    def here(cls, start: Path | None = None) -> "ProjectPaths":
        return cls(find_project_root(start))

    @property
    def downloads(self) -> Path:
        """Archives as downloaded, shared by datasets (xlsa17.zip serves all three); not a DVC output."""
        return self.root / "data" / "downloads"

    def raw(self, source: str) -> Path:
        return self.root / "data" / "raw" / source

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def backbone(self, dataset: str, backbone: str) -> Path:
        return self.root / "data" / "backbones" / dataset / backbone

    def features(self, dataset: str, backbone: str) -> Path:
        return self.features_of(dataset) / backbone

    def features_of(self, dataset: str) -> Path:
        """Every backbone's feature store of a dataset."""
        return self.root / "features" / dataset

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def runs_of(self, dataset: str, backbone: str, stage: str = "train") -> Path:
        """One DVC output per (dataset, backbone) and stage: `runs/<dataset>/<backbone>/<stage>`."""
        return self.runs / dataset / backbone / stage

    def run_slot(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        """Where the `train` stage keeps a method's run of one seed on a (dataset, backbone): the
        content-addressed run folder(s)."""
        return self.runs_of(dataset, backbone) / method / f"seed{seed}"

    def ablation_slot(self, dataset: str, backbone: str, method: str, seed: int) -> Path:
        """Where the `ablate` stage keeps a variant's run."""
        return self.runs_of(dataset, backbone, "ablation") / method / f"seed{seed}"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        """The project's own MLflow store, used when params.yaml's `tracking.uri` is null; the mirror's URI
        in force comes from `tracking.configured_uri(params, paths)`."""
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        """Artifacts of a local MLflow store (a tracking server keeps its own)."""
        return self.root / "mlartifacts"
