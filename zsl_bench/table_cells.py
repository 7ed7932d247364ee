"""What every table shares (report.py's files, compare.py's answers): a cell's mean ± std, n and interval, the
label of a method in a table, and the notes that say what the numbers are."""
from __future__ import annotations

import math
from dataclasses import dataclass


# The input regime of a row, so that a method on frozen maps is never mistaken for its paper's fine-tuned setting.
INPUT_REGIMES = {"vector": "pooled vectors, frozen backbone", "map": "last-layer map, frozen backbone",
                 "maps": "layer2–4 maps, frozen backbone", "image": "images, backbone fine-tuned"}
STD_NOTE = "mean ± std over seeds (sample std, ddof = 1), n = number of seeds"
NOT_SEARCHED = "†"
NOT_SEARCHED_NOTE = (f"{NOT_SEARCHED} hyperparameters not searched (defaults only: `--no-search`, `train.search: none` "
                     "or a one-point grid); epoch and γ were still chosen on validation.")


def precision_label(values) -> str:
    """The training precision of a group of runs: one name, or the names joined when the runs differ."""
    return "/".join(sorted(set(values)))


def method_label(row) -> str:
    """The method's name in a table, marked when some of its runs searched no hyperparameters and with its
    training precision when that is not the official fp32 (a speed mode changes the numbers)."""
    precision = row.get("precision") or "fp32"
    return (row["method"] + ("" if precision == "fp32" else f" ({precision})")
            + ("" if row["hparams_searched"] else f" {NOT_SEARCHED}"))


@dataclass
class Cell:
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    note: str = ""        # why a cell is empty or incomplete

    @property
    def excludes_zero(self) -> bool | None:
        if self.ci_low is None:
            return None
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def text(self, signed: bool = False) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return f"— ({self.note})" if self.note else "—"
        value = f"{self.mean:+.1f}" if signed else f"{self.mean:.1f}"
        if self.n > 1 and not math.isnan(self.std):
            value += f" ± {self.std:.1f}"
        else:
            value += " (n = 1, no std)"
        if self.ci_low is not None:
            value += f" [{self.ci_low:+.1f}, {self.ci_high:+.1f}]" + ("*" if self.excludes_zero else "")
        return value
