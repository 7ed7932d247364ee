"""Pretraining overlap: which of a dataset's classes are in the label set a backbone was pretrained on.

A zero-shot result means less when the backbone was trained with labels for the "unseen" classes. This
module says, per class, whether a pretraining label set names it. It reads no images and imports no torch.

**Label sets** come offline from the installed timm package (`timm/data/_info/`, read by path, never copied):
ImageNet synset lists under timm's own subset names (`imagenet-1k` → `imagenet_synsets.txt`, `imagenet-21k`
→ `imagenet21k_goog_synsets.txt`, `imagenet-22k` → `imagenet22k_synsets.txt`, …) and the lemmas of every
synset from `imagenet_synset_to_lemma.txt`. `none` is a backbone trained here on the seen classes (no
overlap). Web-scale data (LAION, OpenAI's WIT, WebLI, LVD-142M, DataComp) has no label set: every class is
"unknown, possibly seen", with the published sentence that says why (`WEB_SCALE`).

**Matching rule** (for a synset label set):
1. normalise a class name: strip a leading "NNN." id, `_` and `+` become spaces, lower-case, collapse
   spaces ("001.Black_footed_Albatross" → "black footed albatross", "grizzly+bear" → "grizzly bear");
2. normalise every lemma of every synset of the label set the same way;
3. a class matches a synset when the two agree once hyphens and spaces are ignored
   ("black footed albatross" = "black-footed albatross", "frigatebird" = "frigate bird"). Every synset with
   such a lemma is reported, so a homonym shows as a second synset (AwA2's mouse would also hit the computer
   mouse) until the dataset's override file pins the class's own synsets.
Nothing fuzzier (no stemming, no possessives, no edit distance, no WordNet hypernyms): a false "in label set"
would blame a method for pretraining it never had, so precision comes before recall. What the rule misses
or gets wrong is written down, with its reason, in `zsl_bench/overlap_overrides/<DATASET>.yaml`: a class →
the synsets that are that class (`[]`: none is). An override replaces the rule for its class in every
synset label set; the class is in a label set when one of its synsets is.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from zsl_bench.io import DataError

IN_LABEL_SET = "in label set"
NOT_IN_LABEL_SET = "not in label set"
POSSIBLY_SEEN = "unknown, possibly seen"
TRAINED_HERE = "trained here: none"
EXACT_LEMMA = "exact lemma"

OVERRIDES_DIR = Path(__file__).with_name("overlap_overrides")

# timm's subset names (timm/data/imagenet_info.py, _SUBSETS), spelled as timm's pretrained tags say them.
IMAGENET_FILES = {
    "imagenet-1k": ("ImageNet-1k", "imagenet_synsets.txt"),
    "imagenet-12k": ("ImageNet-12k", "imagenet12k_synsets.txt"),
    "imagenet-21k": ("ImageNet-21k", "imagenet21k_goog_synsets.txt"),
    "imagenet-21k-goog": ("ImageNet-21k", "imagenet21k_goog_synsets.txt"),
    "imagenet-21k-miil": ("ImageNet-21k-P (MIIL)", "imagenet21k_miil_synsets.txt"),
    "imagenet-22k": ("ImageNet-22k", "imagenet22k_synsets.txt"),
    "imagenet-22k-ms": ("ImageNet-22k (Microsoft order)", "imagenet22k_ms_synsets.txt"),
}
LEMMA_FILE = "imagenet_synset_to_lemma.txt"

# Any pretraining-data string containing the key is web-scale; the text is what its authors published.
WEB_SCALE = {
    "laion": ("LAION", "LAION-400M/2B/5B (Schuhmann et al., NeurIPS 2022): image-text pairs scraped from "
              "Common Crawl and kept by CLIP similarity; no label set, and any class may be in it."),
    "openai": ("OpenAI WIT", "CLIP (Radford et al., ICML 2021): 400M image-text pairs (WebImageText) found "
               "with 500,000 queries that include every WordNet synset not already in the query list; "
               "not released."),
    "webli": ("WebLI", "WebLI (Chen et al., PaLI, ICLR 2023): 10B web images with alt-texts in 109 languages; "
              "not released."),
    "lvd": ("LVD-142M", "DINOv2 (Oquab et al., 2023): LVD-142M, 142M web images retrieved as near neighbours "
            "of curated datasets, ImageNet-22k and ImageNet-1k among them; not released."),
    "datacomp": ("DataComp", "DataComp (Gadre et al., NeurIPS 2023): image-text pairs filtered from a 12.8B "
                 "Common Crawl pool; no label set."),
}
NONE_SOURCE = "trained here on seen classes: no overlap"


@dataclass(frozen=True)
class LabelSet:
    """A pretraining label set: `kind` "synsets" (with `lemmas`: synset → its lemmas), "web" or "none"."""
    name: str
    title: str
    kind: str
    source: str  # the timm file, or the sentence that says what the data is
    lemmas: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ClassOverlap:
    class_name: str
    status: str  # IN_LABEL_SET, NOT_IN_LABEL_SET, POSSIBLY_SEEN or TRAINED_HERE
    synsets: tuple[str, ...] = ()
    lemma: str = ""
    rule: str = EXACT_LEMMA  # or "override: <reason>"; for web/none label sets, the label set's source


def normalise(name: str) -> str:
    """"001.Black_footed_Albatross" → "black footed albatross"."""
    name = re.sub(r"^\d+\.", "", name.strip())
    return " ".join(name.replace("_", " ").replace("+", " ").lower().split())


def _key(name: str) -> str:
    return normalise(name).replace("-", "").replace(" ", "")


def _timm_info() -> Path:
    # find_spec of the top-level package locates it without importing it (timm's import pulls in torch).
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("pretraining overlap needs the timm package (its data/_info label files); it is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


@lru_cache(maxsize=None)
def _all_lemmas() -> dict[str, tuple[str, ...]]:
    rows = (line.split("\t", 1) for line in (_timm_info() / LEMMA_FILE).read_text().splitlines() if line)
    return {synset: tuple(l.strip() for l in lemmas.split(",")) for synset, lemmas in rows}


def _canonical(pretraining_data: str) -> str:
    return re.sub(r"[\s_-]+", "-", str(pretraining_data).strip().lower())


@lru_cache(maxsize=None)
def label_set(pretraining_data: str) -> LabelSet:
    """The label set of a pretraining-data name: an ImageNet subset, "none", or web-scale data."""
    name = _canonical(pretraining_data)
    if name == "none":
        return LabelSet("none", "no pretraining", "none", NONE_SOURCE)
    if name in IMAGENET_FILES:
        title, file = IMAGENET_FILES[name]
        lemmas = _all_lemmas()
        synsets = (_timm_info() / file).read_text().split()
        missing = [s for s in synsets if s not in lemmas]
        if missing:
            raise DataError(f"timm data/_info/{file}: {len(missing)} synsets have no lemma in {LEMMA_FILE}, e.g. {missing[0]}")
        version = importlib.metadata.version("timm")
        return LabelSet(name, title, "synsets", f"timm {version} data/_info/{file} ({len(synsets)} synsets)",
                        {s: lemmas[s] for s in synsets})
    for key, (title, source) in WEB_SCALE.items():
        if key in name:
            return LabelSet(name, title, "web", source)
    raise DataError(f"pretraining data {pretraining_data!r} is unknown; allowed: none, {', '.join(IMAGENET_FILES)}, "
                    f"or a name containing {', '.join(WEB_SCALE)}")


@lru_cache(maxsize=None)
def _lemma_index(name: str) -> dict[str, list[tuple[str, str]]]:
    index: dict[str, list[tuple[str, str]]] = {}
    for synset, lemmas in label_set(name).lemmas.items():
        for lemma in lemmas:
            index.setdefault(_key(lemma), []).append((synset, lemma))
    return index


@lru_cache(maxsize=None)
def overrides(dataset: str) -> dict[str, tuple[tuple[str, ...], str]]:
    """The dataset's override file as {class key: (synsets, reason)}; {} when it has none."""
    path = OVERRIDES_DIR / f"{dataset}.yaml"
    if not path.is_file():
        return {}
    entries = yaml.safe_load(path.read_text()) or {}
    if not isinstance(entries, dict):
        raise DataError(f"{path}: expected a mapping of class names to {{synsets, reason}}")
    known, out = _all_lemmas(), {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != {"synsets", "reason"} or not isinstance(entry["synsets"], list) \
                or not str(entry["reason"] or "").strip():
            raise DataError(f"{path}: {name}: needs exactly `synsets: [...]` and a non-empty `reason`")
        unknown = [s for s in entry["synsets"] if s not in known]
        if unknown:
            raise DataError(f"{path}: {name}: synsets {unknown} are not in timm's {LEMMA_FILE}")
        if _key(str(name)) in out:
            raise DataError(f"{path}: {name} is overridden twice")
        out[_key(str(name))] = (tuple(entry["synsets"]), str(entry["reason"]).strip())
    return out


def match_classes(class_names: list[str], labels: LabelSet, dataset: str | None = None) -> list[ClassOverlap]:
    """One row per class, in order, under the module's rule and `dataset`'s override file."""
    if labels.kind == "none":
        return [ClassOverlap(c, TRAINED_HERE, rule=labels.source) for c in class_names]
    if labels.kind == "web":
        return [ClassOverlap(c, POSSIBLY_SEEN, rule=labels.source) for c in class_names]
    pinned = overrides(dataset) if dataset else {}
    index = _lemma_index(labels.name)
    rows = []
    for name in class_names:
        if _key(name) in pinned:
            synsets, reason = pinned[_key(name)]
            # show the lemma that names the class where the synset has one ("pig", not "hog")
            hits = [(s, next((l for l in labels.lemmas[s] if _key(l) == _key(name)), labels.lemmas[s][0]))
                    for s in synsets if s in labels.lemmas]
            rule = f"override: {reason}"
        else:
            hits, rule = index.get(_key(name), []), EXACT_LEMMA
        first = dict(reversed(hits))  # synset → its first matching lemma ("nightclub", not also "night club")
        synsets = tuple(dict.fromkeys(s for s, _ in hits))
        lemma = "; ".join(dict.fromkeys(first[s] for s in synsets))
        rows.append(ClassOverlap(name, IN_LABEL_SET if hits else NOT_IN_LABEL_SET, synsets, lemma, rule))
    return rows


GROUPS = (("test_unseen", "test-unseen"), ("val_unseen", "validation-unseen"))


def overlap_summary(dataset: str, backbone_name: str, pretraining_data: str, unseen_classes: list[str],
                    val_unseen_classes: list[str]) -> dict:
    """JSON-able overlap of a dataset's test-unseen and validation-unseen classes with a backbone's pretraining.

    `flag`: "known overlap" when a class of either group is in the label set, "possibly seen" for
    web-scale data, else "none"."""
    labels = label_set(pretraining_data)
    summary = {"dataset": dataset, "backbone": backbone_name, "pretraining_data": pretraining_data,
               "label_set": labels.name, "label_set_title": labels.title, "kind": labels.kind, "source": labels.source,
               "overrides": f"zsl_bench/overlap_overrides/{dataset}.yaml" if overrides(dataset) else None}
    for group, _ in GROUPS:
        classes = unseen_classes if group == "test_unseen" else val_unseen_classes
        rows = match_classes(list(dict.fromkeys(classes)), labels, dataset)
        summary[group] = {"total": len(rows),
                          "in_label_set": sum(r.status == IN_LABEL_SET for r in rows),
                          "possibly_seen": sum(r.status == POSSIBLY_SEEN for r in rows),
                          "rows": [{**r.__dict__, "synsets": list(r.synsets)} for r in rows]}
    groups = [summary[g] for g, _ in GROUPS]
    summary["flag"] = ("known overlap" if any(g["in_label_set"] for g in groups)
                       else "possibly seen" if any(g["possibly_seen"] for g in groups) else "none")
    return summary


def headline(s: dict) -> str:
    def part(group: str, words: str) -> str:
        g = s[group]
        if s["kind"] == "synsets":
            return f"{g['in_label_set']} of {g['total']} {words} classes in {s['label_set_title']}'s label set"
        if s["kind"] == "web":
            return f"{g['possibly_seen']} of {g['total']} {words} classes possibly seen in {s['label_set_title']} (no label set)"
        return f"0 of {g['total']} {words} classes seen (backbone trained here on seen classes)"
    return "; ".join(part(g, words) for g, words in GROUPS)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


HOW_TO_READ = (
    "How to read this: a class \"in label set\" was a training label of the backbone's pretraining, so its "
    "\"unseen\" images are not unseen to the features; test-unseen overlap inflates U and H, validation-unseen "
    "overlap biases what the `val` policy selects. The rule is exact: a class counts only when its normalised "
    "name equals a WordNet lemma of a synset in the set (hyphens and spaces aside) or a reviewed override says "
    "which synsets it is, so a species under a family label (CUB's albatrosses under ImageNet-1k's "
    "\"albatross\") is not counted and the counts are a lower bound of visual overlap. Web-scale data publishes "
    "no label set: every class is \"unknown, possibly seen\", with the source of that statement. Only the classes "
    "in the label set are listed, each with the rule or override that put it there; the others are counted.")


def overlap_markdown(summaries: list[dict]) -> str:
    """The body of reports/overlap.md: a section per (dataset, backbone)."""
    lines = ["# Pretraining overlap", "", HOW_TO_READ]
    for s in summaries:
        lines += ["", f"## {s['dataset']} · {s['backbone']} · {s['label_set_title']}", "",
                  f"**{headline(s)}.** Flag: {s['flag']}.", "", f"Source: {s['source'].rstrip('.')}."]
        if s["kind"] != "synsets":
            continue
        lines += ["", "Rule: exact lemma after normalisation (zsl_bench/overlap.py)"
                  + (f"; overrides from `{s['overrides']}`." if s["overrides"] else "; no override file.")]
        listed = [(words, r) for g, words in GROUPS for r in s[g]["rows"] if r["status"] == IN_LABEL_SET]
        if listed:
            lines += ["", "| split | class | synsets | lemma | rule |", "|---|---|---|---|---|"]
            lines += [f"| {words} | {_cell(r['class_name'])} | {', '.join(r['synsets'])} | {_cell(r['lemma'])} | "
                      f"{_cell(r['rule'])} |" for words, r in listed]
        absent = [[r for r in s[g]["rows"] if r["status"] == NOT_IN_LABEL_SET] for g, _ in GROUPS]
        lines += ["", "Not in the label set (not listed): " + ", ".join(
            f"{len(rows)} {words} ({sum(r['rule'] != EXACT_LEMMA for r in rows)} by an override)"
            for rows, (_, words) in zip(absent, GROUPS)) + "."]
    return "\n".join(lines) + "\n"
