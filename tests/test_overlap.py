"""Pretraining overlap (zsl_bench/overlap.py) on the real xlsa17 class lists in ../shared/zsl-metadata (skipped
without them) and timm's own ImageNet label files. Every synset asserted here was read in timm's
data/_info/imagenet_synset_to_lemma.txt and imagenet_synset_to_definition.txt."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from zsl_bench import overlap
from zsl_bench.data.xlsa17 import read_class_list
from zsl_bench.io import DataError


def classes(metadata, dataset, *files):
    return list(dict.fromkeys(c for f in files for c in read_class_list(metadata / dataset / f)))


def splits(metadata, dataset):
    return (classes(metadata, dataset, "testclasses.txt"),
            classes(metadata, dataset, *(f"valclasses{k}.txt" for k in (1, 2, 3))))


def row(name, labels, dataset):
    (r,) = overlap.match_classes([name], overlap.label_set(labels), dataset)
    return r


def test_normalise_xlsa17_names():
    assert overlap.normalise("001.Black_footed_Albatross") == "black footed albatross"
    assert overlap.normalise("grizzly+bear") == "grizzly bear"
    assert overlap.normalise("  airplane_cabin ") == "airplane cabin"


def test_label_sets_come_from_timm_files():
    in1k, in21k, in22k = (overlap.label_set(n) for n in ("imagenet-1k", "ImageNet_21k", "imagenet-22k"))
    assert (len(in1k.lemmas), len(in21k.lemmas), len(in22k.lemmas)) == (1000, 21843, 21841)
    assert "imagenet_synsets.txt" in in1k.source
    assert "imagenet21k_goog_synsets.txt" in in21k.source and "imagenet22k_synsets.txt" in in22k.source
    assert in1k.lemmas["n02071294"][:2] == ("killer whale", "killer")


def test_imagenet_1k_named_matches(shared_metadata):
    cases = {("CUB", "014.Indigo_Bunting"): ("n01537544", "indigo bunting"),
             ("CUB", "090.Red_breasted_Merganser"): ("n01855032", "red-breasted merganser"),
             ("AWA2", "killer+whale"): ("n02071294", "killer whale"),
             ("AWA2", "german+shepherd"): ("n02106662", "German shepherd"),
             ("AWA2", "giant+panda"): ("n02510455", "giant panda"),
             ("SUN", "viaduct"): ("n04532670", "viaduct")}
    for (dataset, name), (synset, lemma) in cases.items():
        r = row(name, "imagenet-1k", dataset)
        assert (r.status, r.synsets, r.lemma, r.rule) == (overlap.IN_LABEL_SET, (synset,), lemma, overlap.EXACT_LEMMA), name


def test_imagenet_1k_named_non_matches(shared_metadata):
    # ImageNet-1k has the families "albatross", "hummingbird", "pelican": a species under them is not the label.
    for name in ("002.Laysan_Albatross", "067.Anna_Hummingbird", "100.Brown_Pelican", "001.Black_footed_Albatross"):
        assert row(name, "imagenet-1k", "CUB").status == overlap.NOT_IN_LABEL_SET, name
    for name in ("sheep", "dolphin", "blue+whale", "horse"):
        assert row(name, "imagenet-1k", "AWA2").status == overlap.NOT_IN_LABEL_SET, name
    # Xian et al.'s proposed split chose test classes outside ImageNet-1k: the rule must agree.
    for dataset in ("CUB", "AWA2", "SUN"):
        test, _ = splits(shared_metadata, dataset)
        assert overlap.overlap_summary(dataset, "resnet101", "imagenet-1k", test, [])["test_unseen"]["in_label_set"] == 0


def test_validation_unseen_classes_overlap_imagenet_1k(shared_metadata):
    test, val = splits(shared_metadata, "CUB")
    s = overlap.overlap_summary("CUB", "resnet101", "imagenet-1k", test, val)
    found = {r["class_name"]: r["synsets"] for r in s["val_unseen"]["rows"] if r["status"] == overlap.IN_LABEL_SET}
    assert found == {"014.Indigo_Bunting": ["n01537544"], "090.Red_breasted_Merganser": ["n01855032"],
                     "048.European_Goldfinch": ["n01531178"]}
    assert s["flag"] == "known overlap"


def test_larger_imagenets_hold_the_awa2_test_species(shared_metadata):
    test, _ = splits(shared_metadata, "AWA2")
    for labels in ("imagenet-21k", "imagenet-22k"):
        rows = overlap.match_classes(test, overlap.label_set(labels), "AWA2")
        assert all(r.status == overlap.IN_LABEL_SET for r in rows), labels
    assert row("bobcat", "imagenet-21k", "AWA2").synsets == ("n02127482",)


def test_overrides_fix_homonyms_and_spellings(shared_metadata):
    # Without the override file the rule takes ImageNet-1k's computer mouse and breakwater for the animals.
    assert row("mouse", "imagenet-1k", None).synsets == ("n03793489",)
    assert row("mole", "imagenet-1k", None).synsets == ("n02894605",)
    for name in ("mouse", "mole"):
        r = row(name, "imagenet-1k", "AWA2")
        assert r.status == overlap.NOT_IN_LABEL_SET and r.rule.startswith("override: "), name
    assert row("mouse", "imagenet-21k", "AWA2").synsets == ("n02330245",)
    assert set(row("017.Cardinal", "imagenet-21k", None).synsets) == {"n01541386", "n09894143"}
    assert row("017.Cardinal", "imagenet-21k", "CUB").synsets == ("n01541386",)
    assert row("022.Chuck_will_Widow", "imagenet-21k", None).status == overlap.NOT_IN_LABEL_SET
    r = row("022.Chuck_will_Widow", "imagenet-21k", "CUB")
    assert (r.status, r.synsets, r.lemma) == (overlap.IN_LABEL_SET, ("n01835918",), "chuck-will's-widow")
    assert row("roundabout", "imagenet-1k", "SUN").status == overlap.NOT_IN_LABEL_SET   # not the merry-go-round


def test_every_override_names_a_real_class(shared_metadata):
    for dataset in ("CUB", "AWA2", "SUN"):
        names = {overlap._key(c) for c in classes(shared_metadata, dataset, "trainvalclasses.txt", "testclasses.txt")}
        pinned = overlap.overrides(dataset)
        assert pinned and set(pinned) <= names, sorted(set(pinned) - names)


def test_bad_override_file_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(overlap, "OVERRIDES_DIR", tmp_path)
    overlap.overrides.cache_clear()
    try:
        (tmp_path / "X.yaml").write_text(yaml.safe_dump({"mouse": {"synsets": ["n99999999"], "reason": "typo"}}))
        with pytest.raises(DataError, match="n99999999"):
            overlap.overrides("X")
        (tmp_path / "Y.yaml").write_text(yaml.safe_dump({"mouse": {"synsets": []}}))
        with pytest.raises(DataError, match="reason"):
            overlap.overrides("Y")
    finally:
        overlap.overrides.cache_clear()


@pytest.mark.parametrize("data,title", [("laion-2b", "LAION"), ("openai-wit", "OpenAI WIT"),
                                        ("lvd-142m", "LVD-142M"), ("webli", "WebLI")])
def test_web_scale_is_possibly_seen_for_every_class(shared_metadata, data, title):
    test, val = splits(shared_metadata, "CUB")
    s = overlap.overlap_summary("CUB", "vit", data, test, val)
    assert s["label_set_title"] == title and s["flag"] == "possibly seen" and s["source"]
    for group, n in (("test_unseen", 50), ("val_unseen", len(val))):
        assert s[group]["total"] == s[group]["possibly_seen"] == n and s[group]["in_label_set"] == 0
        assert {r["status"] for r in s[group]["rows"]} == {overlap.POSSIBLY_SEEN}


def test_trained_here_has_no_overlap(shared_metadata):
    test, val = splits(shared_metadata, "SUN")
    s = overlap.overlap_summary("SUN", "resnet50", "none", test, val)
    assert s["flag"] == "none" and s["test_unseen"]["in_label_set"] == s["test_unseen"]["possibly_seen"] == 0
    assert {r["status"] for r in s["test_unseen"]["rows"]} == {overlap.TRAINED_HERE}
    assert "no overlap" in s["source"]


def test_unknown_pretraining_data_names_the_value():
    with pytest.raises(DataError, match=r"'jft-300m'.*imagenet-1k.*laion"):
        overlap.label_set("jft-300m")


def test_markdown_headlines_and_table(shared_metadata):
    test, val = splits(shared_metadata, "CUB")
    summaries = [overlap.overlap_summary("CUB", "resnet101", "imagenet-1k", test, val),
                 overlap.overlap_summary("CUB", "resnet101", "imagenet-21k", test, val),
                 overlap.overlap_summary("CUB", "vit_b16", "laion-2b", test, val)]
    md = overlap.overlap_markdown(summaries)
    assert f"0 of 50 test-unseen classes in ImageNet-1k's label set; 3 of {len(val)} validation-unseen" in md
    assert f"50 of 50 test-unseen classes possibly seen in LAION (no label set); {len(val)} of {len(val)}" in md
    in1k = md.split("## ")[1]
    assert "| validation-unseen | 014.Indigo_Bunting | n01537544 | indigo bunting | exact lemma |" in in1k
    assert "043.Yellow_bellied_Flycatcher" not in in1k and "180.Wilson_Warbler" not in in1k   # counted, not listed
    # four test-unseen classes are pinned by CUB.yaml to synsets outside ImageNet-1k (e.g. Wilson's warbler)
    assert f"Not in the label set (not listed): 50 test-unseen (4 by an override), {len(val) - 3} validation-unseen" in in1k
    in21k = md.split("## ")[2]
    assert "| test-unseen | 180.Wilson_Warbler | n01567879 | Wilson's warbler | override:" in in21k


def test_no_torch_import():
    code = ("import sys, zsl_bench.overlap as o; o.label_set('imagenet-1k'); "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
