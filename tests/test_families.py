"""The model-family registry: every record is complete and consistent, every layer reads it.

Run over every registered family (a new record is tested without new test code, except its
checkpoint layout writer in `LAYOUTS`), plus a toy family added by one record only, which the
weights registry, `load_model`, the `Segmenter`, the evaluation's predictor and the widget's
model lists pick up.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_focsam import families
from napari_focsam.api.models import RANDOM_WEIGHTS, load_model
from napari_focsam.api.prompts_file import ObjectPrompt
from napari_focsam.api.segmenter import Segmenter
from napari_focsam.engine.image import to_rgb_uint8
from napari_focsam.engine.interactive import InteractivePredictor
from napari_focsam.families import (
    FAMILIES,
    ModelChoiceError,
    Role,
    UnknownModelError,
    WeightSpec,
    detect_family,
    family_of,
    get_family,
    model_menu,
)
from napari_focsam.models.checkpoint import CheckpointError
from napari_focsam.models.focsam import sam_to_focsam_state_dict
from napari_focsam.weights import WEIGHTS, list_specs

#: How each family's checkpoints are laid out on disk (official formats).
LAYOUTS = {
    "sam": lambda net: net.state_dict(),
    "sam2": lambda net: {"model": net.state_dict()},
    "focsam": lambda net: {"meta": {}, "state_dict": sam_to_focsam_state_dict(
        net.sam.state_dict(), net.refiner.state_dict())},
}
HW = (36, 52)


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 50, HW).astype(np.uint16)
    img[8:28, 12:40] += 900
    return img


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """``{family name: (path of a tiny checkpoint in its official layout, its net)}``."""
    folder = tmp_path_factory.mktemp("families")
    out = {}
    for name, family in FAMILIES.items():
        torch.manual_seed(0)
        net = family.build(family.configs[family.test_configs[0]])
        path = folder / f"{name}.pt"
        torch.save(LAYOUTS[name](net), path)
        out[name] = (path, net)
    return out


def test_every_family_has_a_layout_writer_here():
    assert set(LAYOUTS) == set(FAMILIES)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_records_are_complete_and_consistent(name):
    family = FAMILIES[name]
    assert family.name == name and get_family(name) is family
    assert family.roles and family.title and family.layout
    for spec in family.checkpoints:
        assert spec.family == name and WEIGHTS[spec.id] is spec
        assert spec.config in family.configs, spec.id
    for config in family.test_configs:
        assert config in family.configs
    assert [s.id for s in list_specs(name)] == [s.id for s in family.checkpoints]
    if family.can(Role.INTERACTIVE):
        assert family.parts.interactive_predictor is not None


def test_weights_registry_is_built_from_the_families():
    assert list(WEIGHTS.values()) == [s for f in FAMILIES.values() for s in f.checkpoints]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_checkpoints_are_detected_loaded_and_refused_by_the_others(name, tiny_files):
    family = FAMILIES[name]
    path, net = tiny_files[name]
    assert detect_family(family.read(path)) is family
    loaded = family.load(path, family.configs[family.test_configs[0]], device="cpu")
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    for other in FAMILIES.values():
        if other is family:
            continue
        with pytest.raises(CheckpointError) as info:
            other.load(path, other.configs[other.test_configs[0]])
        message = str(info.value)
        assert family.layout in message and f"expected {other.layout}" in message


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.can(Role.INTERACTIVE)])
def test_the_predictor_on_store_features_equals_it_on_the_image(name):
    """The two ways a frame reaches a predictor (cached features from the family's stack
    encoder, or `set_image`) give the same prediction."""
    loaded = load_model(FAMILIES[name].test_configs[0], weights=RANDOM_WEIGHTS, device="cpu",
                        dtype="fp32")
    direct = loaded.interactive_predictor()
    assert isinstance(direct, InteractivePredictor)
    direct.set_image(_image())
    encoder = loaded.stack_encoder()
    arrays = encoder.encode([to_rgb_uint8(_image())])[0]
    cached = loaded.interactive_predictor()
    cached.set_frame(encoder.to_features(arrays, HW), HW)
    points, labels = np.array([[18.0, 20.0], [3.0, 45.0]]), np.array([1, 0])
    a = direct.start_session()
    b = cached.start_session()
    for (r, c), lab in zip(points, labels, strict=True):
        np.testing.assert_array_equal(a.add_click(r, c, bool(lab)).logits,
                                      b.add_click(r, c, bool(lab)).logits)
    np.testing.assert_array_equal(direct.predict(points, labels, multimask=False).logits,
                                  cached.predict(points, labels, multimask=False).logits)


def test_lookups():
    assert family_of("sam_vit_b") is FAMILIES["sam"]
    assert family_of("sam2_test_tiny") is FAMILIES["sam2"]
    assert families.config_of("sam2.1_hiera_tiny").name == "sam2.1_hiera_tiny"
    assert set(WEIGHTS) <= set(families.known_model_ids())
    with pytest.raises(UnknownModelError, match="Did you mean 'sam_vit_b'"):
        family_of("sam_vit_bb")
    with pytest.raises(ModelChoiceError, match="unknown family 'sam3'"):
        get_family("sam3")
    assert detect_family({"foo": torch.zeros(1)}) is None


def test_model_menus_come_from_the_records():
    interactive = model_menu(Role.INTERACTIVE)
    propagation = model_menu(Role.PROPAGATION)
    ids = [e.model_id for e in interactive]
    assert ids.index("sam_vit_b") < ids.index("focsam_vit_h") < ids.index("sam2.1_hiera_tiny")
    assert {"vit_b_lm", "vit_t_lm", "vit_b_em_organelles", "vit_t"} <= set(ids)
    assert "sam2.1_hiera_tiny" in ids and "sam2_hiera_tiny" not in ids  # 2.0: not offered
    assert [e.model_id for e in interactive if e.suggested] == ["vit_b_lm"]  # LM by default
    assert all(e.description for e in interactive)
    assert all(family_of(e.model_id).can(Role.PROPAGATION) for e in propagation)
    assert [e.model_id for e in propagation] == [m for m in ids
                                                 if family_of(m).can(Role.PROPAGATION)]
    tests = model_menu(Role.INTERACTIVE, with_test_configs=True)[len(interactive):]
    assert [e.model_id for e in tests] == ["sam_test_tiny", "sam_test_tinyvit", "focsam_test_tiny",
                                          "sam2_test_tiny"]
    labels = [e.label for e in model_menu(Role.INTERACTIVE, with_test_configs=True)]
    assert len(set(labels)) == len(labels) and "SAM 2 test-tiny" in labels


def test_a_new_family_is_one_record(monkeypatch, tiny_files):
    """A toy family (SAM's parts under another name, one released checkpoint) registered by
    its record alone is offered, fetched, loaded and used by every layer."""
    spec = WeightSpec("toy_tiny", "toy", "sam_test_tiny", "toy.pth", "http://unused/toy.pth",
                      label="Toy tiny")
    toy = dataclasses.replace(families.SAM, name="toy", title="Toy", checkpoints=(spec,),
                              test_configs=())
    monkeypatch.setitem(FAMILIES, "toy", toy)
    monkeypatch.setitem(WEIGHTS, "toy_tiny", spec)  # done at import for records in the module
    assert ("Toy tiny", "toy_tiny") in [e[:2] for e in model_menu(Role.INTERACTIVE)]
    assert "toy_tiny" not in [e.model_id for e in model_menu(Role.PROPAGATION)]
    assert list_specs("toy") == [spec]
    loaded = load_model("toy_tiny", weights=tiny_files["sam"][0], device="cpu", dtype="fp32")
    assert loaded.family is toy and loaded.can(Role.INTERACTIVE)
    with pytest.raises(ModelChoiceError, match="cannot be the propagation model"):
        load_model("toy_tiny", weights=RANDOM_WEIGHTS, role="propagation")
    seg = Segmenter(_image(), interactive=loaded, cache_root=False)
    mask = seg.draw_object(ObjectPrompt(1, None, np.array([[18.0, 20.0]]), np.array([1])))
    assert mask.shape == HW and mask.dtype == bool
