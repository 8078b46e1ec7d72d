"""The registry of official checkpoints."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from napari_focsam.families import FAMILIES, ModelChoiceError
from napari_focsam.weights import (
    WEIGHTS,
    UnknownModelError,
    WeightSpec,
    download_url,
    get_spec,
    list_specs,
)

UNPUBLISHED = {"sam2_hiera_tiny", "sam2_hiera_small", "sam2_hiera_base_plus", "sam2_hiera_large",
               "focsam_vit_h"}


#: micro-sam's model zoo (SAM fine-tuned for microscopy, and MobileSAM): xxHash-128 published.
MICRO_SAM = {"vit_b_lm", "vit_l_lm", "vit_t_lm", "vit_b_em_organelles", "vit_l_em_organelles",
             "vit_t_em_organelles", "vit_b_histopathology", "vit_l_histopathology",
             "vit_h_histopathology", "vit_b_medical_imaging", "vit_t"}


def test_every_released_model_is_registered():
    assert set(WEIGHTS) == {
        "sam_vit_b", "sam_vit_l", "sam_vit_h",
        "sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large",
        *UNPUBLISHED, *MICRO_SAM,
    }
    assert all(key == spec.id for key, spec in WEIGHTS.items())
    assert len({spec.filename for spec in WEIGHTS.values()}) == len(WEIGHTS)  # one file each


def test_published_hashes_are_sha256_or_xxh128_hex():
    for spec in WEIGHTS.values():
        if spec.id in UNPUBLISHED:
            assert spec.published_hash is None, spec.id
        elif spec.id in MICRO_SAM:
            assert spec.sha256 is None and re.fullmatch(r"[0-9a-f]{32}", spec.xxh128), spec.id
            assert spec.published_hash == ("xxh128", spec.xxh128)
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.id
            assert spec.published_hash == ("sha256", spec.sha256)
    assert len({s.sha256 for s in WEIGHTS.values() if s.sha256}) == 7
    assert len({s.xxh128 for s in WEIGHTS.values() if s.xxh128}) == len(MICRO_SAM)
    assert get_spec("sam_vit_b").sha256 == (
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912")
    assert get_spec("vit_b_lm").xxh128 == "fe9252a29f3f4ea53c15a06de471e186"


def test_configs_exist_in_the_model_code():
    for spec in WEIGHTS.values():
        assert spec.family in FAMILIES
        assert spec.config in FAMILIES[spec.family].configs, spec.id


def test_urls_and_file_names():
    for spec in list_specs("sam") + list_specs("sam2"):
        assert spec.source == "http" and spec.archive_member is None
        if spec.id in MICRO_SAM:
            assert spec.url.startswith(("https://uk1s3.embassy.ebi.ac.uk/", "https://owncloud.gwdg.de/"))
            assert spec.filename == f"{spec.id}.pt"
            continue
        assert spec.url.startswith("https://dl.fbaipublicfiles.com/")
        assert spec.url.rsplit("/", 1)[1] == spec.filename
    assert get_spec("sam2.1_hiera_large").url.endswith("/092824/sam2.1_hiera_large.pt")
    assert get_spec("sam2_hiera_large").url.endswith("/072824/sam2_hiera_large.pt")
    focsam = get_spec("focsam_vit_h")
    assert focsam.source == "gdrive"
    assert focsam.filename == "focsam_vit_h.zip"
    assert focsam.archive_member == "iter_160000.pth"
    assert focsam.url == ("https://drive.usercontent.google.com/download?"
                          "id=1VOeMkY9LovfWYi66JMR8q79gFiC4n3Az&export=download&confirm=t")
    assert focsam.manual_url == "https://drive.google.com/file/d/1VOeMkY9LovfWYi66JMR8q79gFiC4n3Az"
    assert get_spec("sam_vit_b").manual_url == get_spec("sam_vit_b").url


def test_sizes_are_known_where_published():
    assert get_spec("sam_vit_h").size == 2564550879
    assert get_spec("sam2.1_hiera_tiny").size == 156008466
    for spec in WEIGHTS.values():
        assert (spec.size is None) == (spec.id in UNPUBLISHED | MICRO_SAM), spec.id


def test_unknown_model_suggests_a_close_id():
    with pytest.raises(UnknownModelError) as info:
        get_spec("sam_vit_bb")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, ModelChoiceError)
    assert err.suggestion == "sam_vit_b"
    assert "Did you mean 'sam_vit_b'?" in str(err)
    assert "sam2.1_hiera_tiny" in str(err) and "focsam_vit_h" in str(err)
    with pytest.raises(UnknownModelError) as info:
        get_spec("zzz")
    assert info.value.suggestion is None


def test_list_specs_by_family():
    sam = [s.id for s in list_specs("sam")]
    assert sam[-3:] == ["sam_vit_b", "sam_vit_l", "sam_vit_h"] and set(sam[:-3]) == MICRO_SAM
    assert len(list_specs("sam2")) == 8
    assert [s.id for s in list_specs("focsam")] == ["focsam_vit_h"]
    assert list_specs() == list(WEIGHTS.values())
    with pytest.raises(ValueError, match="unknown family"):
        list_specs("sam3")


def test_specs_are_frozen_and_looked_up_at_call_time(monkeypatch):
    spec = get_spec("sam_vit_b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.url = "http://elsewhere"  # type: ignore[misc]
    fake = WeightSpec("my_model", "sam", "sam_test_tiny", "my.pth", "http://example.invalid/my.pth")
    monkeypatch.setitem(WEIGHTS, "my_model", fake)
    assert get_spec("my_model") is fake
    assert download_url("my_model") == "http://example.invalid/my.pth"
    assert download_url("my_model", "http://mirror/w/") == "http://mirror/w/my.pth"
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_URL", "http://env-mirror")
    assert download_url("my_model") == "http://env-mirror/my.pth"
    assert download_url("focsam_vit_h") == "http://env-mirror/focsam_vit_h.zip"


def test_importing_weights_is_cheap():
    code = ("import json, sys, napari_focsam.weights, napari_focsam.cli.weights; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert not loaded & {"torch", "requests", "pooch", "napari", "qtpy"}
