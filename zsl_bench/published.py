"""Published numbers (GBU proposed split), the one machine-readable copy `compare` prints beside ours.

In %: T1 = ZSL per-class top-1, U / S / H = GZSL. Each entry says where it comes from and how sure we
are of it (protocol.md §4 evidence marks); the method READMEs give the same numbers in prose. Published
numbers were test-selected by their authors (protocol.md pitfall 8), so they compare with our `oracle`
rows, not with the validation-selected headline. Mg-MRN has none: no accessible text of arXiv 2511.08163
has tables.
"""
from __future__ import annotations

from dataclasses import dataclass

GBU = "Xian et al., GBU (TPAMI 2019), proposed split"


@dataclass(frozen=True)
class Published:
    T1: float | None
    U: float | None
    S: float | None
    H: float | None
    source: str

    def get(self, metric: str) -> float | None:
        return getattr(self, metric, None)


PUBLISHED: dict[tuple[str, str], Published] = {
    ("eszsl", "cub"): Published(53.9, 12.6, 63.8, 21.0, GBU),
    ("eszsl", "sun"): Published(54.5, 11.0, 27.9, 15.8, GBU),
    ("eszsl", "awa2"): Published(58.6, 5.9, 77.8, 11.0, GBU),
    ("sae", "cub"): Published(33.3, 7.8, 54.0, 13.6, GBU),
    ("sae", "sun"): Published(40.3, 8.8, 18.0, 11.8, GBU),
    ("sae", "awa2"): Published(54.1, 1.1, 82.2, 2.2, GBU),
    ("ale", "cub"): Published(54.9, 23.7, 62.8, 34.4, GBU + " (GZSL cells quoted from memory in protocol.md)"),
    ("ale", "sun"): Published(58.1, 21.8, 33.1, 26.3, GBU + " (GZSL cells quoted from memory in protocol.md)"),
    ("ale", "awa2"): Published(62.5, 14.0, 81.8, 23.9, GBU + " (GZSL cells quoted from memory in protocol.md)"),
    ("dazle", "cub"): Published(66.0, 56.7, 59.6, 58.1, "Huynh & Elhamifar, CVPR 2020, Table 2"),
    ("dazle", "sun"): Published(59.4, 52.3, 24.3, 33.2, "Huynh & Elhamifar, CVPR 2020, Table 2"),
    ("dazle", "awa2"): Published(67.9, 60.3, 75.7, 67.1, "Huynh & Elhamifar, CVPR 2020, Table 2"),
    ("transzero", "cub"): Published(76.8, 69.3, 68.3, 68.8, "Chen et al., AAAI 2022; official README"),
    ("transzero", "sun"): Published(65.6, 52.6, 33.4, 40.8, "Chen et al., AAAI 2022; official README"),
    ("transzero", "awa2"): Published(70.1, 61.3, 82.3, 70.2, "Chen et al., AAAI 2022; official README"),
}


def published(method: str, dataset: str) -> Published | None:
    """The published numbers of a method (its base name: variants have none) on a dataset, if any."""
    return PUBLISHED.get((method, dataset.lower()))
