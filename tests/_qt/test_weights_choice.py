"""Local checkpoint files for both models (passed to `load_model`, shown, bad ones reported as
user errors) and the random-weights switch that disables them."""

from __future__ import annotations

import pytest
import torch
from widget_helpers import synthetic_stack, wait_idle, wait_preview

import napari_focsam._qt.session as session
from napari_focsam._qt.session import ModelChoice
from napari_focsam.api.models import RANDOM_WEIGHTS, load_model

pytestmark = pytest.mark.gui


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A state_dict of the tiny SAM test config, as a fine-tuned checkpoint file."""
    path = tmp_path / "my_finetuned.pth"
    torch.save(load_model("sam_test_tiny", weights=RANDOM_WEIGHTS, device="cpu").net.state_dict(), path)
    return path


def test_a_local_file_goes_to_load_model_and_is_shown(make_widget, fake_draw, monkeypatch,
                                                      tiny_checkpoint, qtbot):
    calls = []

    def recording_load(model_id, **kwargs):
        calls.append((model_id, kwargs["weights"], kwargs["role"]))
        # the tiny config stands in for SAM ViT-B (whose real weights are 375 MB)
        return load_model("sam_test_tiny", **{**kwargs, "role": None})

    monkeypatch.setattr(session, "load_model", recording_load)
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    models.random_check.setChecked(False)
    models.select_models("sam_vit_b")
    models.set_local_file(str(tiny_checkpoint))
    assert models.interactive_choice() == ModelChoice("sam_vit_b", str(tiny_checkpoint))
    assert models.interactive_combo.currentText() == "SAM ViT-B — local file"
    assert str(tiny_checkpoint) in models.local_file.toolTip()
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    wait_preview(qtbot, widget)
    assert calls == [("sam_vit_b", str(tiny_checkpoint), "interactive")]
    assert widget.controller.holder.current.interactive.weights == str(tiny_checkpoint)
    models.set_local_file(str(tiny_checkpoint), role="propagation")
    assert models.propagation_choice().weights == str(tiny_checkpoint)
    assert models.propagation_combo.currentText().endswith("— local file")


def test_a_config_with_a_local_file_previews_and_a_corrupt_file_is_a_user_error(
        make_widget, monkeypatch, tiny_checkpoint, tmp_path, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    choice = ModelChoice("sam_test_tiny", str(tiny_checkpoint))
    monkeypatch.setattr(models, "interactive_choice", lambda: choice)
    models.changed.emit()
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    wait_preview(qtbot, widget, timeout=60000)  # the real tiny model, loaded from the file
    assert widget.controller.holder.current.interactive.weights == str(tiny_checkpoint)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:1000])  # a truncated download
    choice = ModelChoice("sam_test_tiny", str(corrupt))
    models.changed.emit()
    qtbot.waitUntil(lambda: "corrupt.pth" in widget.status_label.text(), timeout=20000)
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert text.startswith(f"Preview failed: the local file {corrupt} cannot be used for "
                           "sam_test_tiny: ")
    assert "internal error" not in text and "Choose another file for the model under Setup" in text


def test_random_weights_disable_and_empty_the_local_files(make_widget, tiny_checkpoint, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    assert models.random_weights and not models.local_file.isEnabled()
    assert models.local_file.text() == "" and "random" in models.local_file.placeholderText()
    models.random_check.setChecked(False)
    models.set_local_file(str(tiny_checkpoint))
    models.random_check.setChecked(True)
    for local in (models.interactive_file, models.propagation_file):
        assert not local.edit.isEnabled() and not local.browse.isEnabled()
    assert models.local_file.text() == ""  # not shown while unused
    assert models.interactive_choice().weights == RANDOM_WEIGHTS
    models.random_check.setChecked(False)
    assert models.local_file.text() == str(tiny_checkpoint)  # back when usable again
    assert models.interactive_choice().weights == str(tiny_checkpoint)


def test_download_in_offline_mode_names_the_gui_actions(make_widget, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("NAPARI_FOCSAM_OFFLINE", "1")
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    models.random_check.setChecked(False)
    models.select_models("sam_vit_b")
    models.download_button.click()
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert text.startswith("Download failed: sam_vit_b cannot be downloaded: offline mode is on")
    assert "Choose a local checkpoint file under Setup" in text and str(tmp_path) in text
    assert "resolve_weights" not in text and "offline=True" not in text


def test_a_damaged_download_is_named_with_what_to_do(make_widget, monkeypatch, tmp_path, qtbot):
    from napari_focsam.weights import cached_path

    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    damaged = cached_path("sam_vit_b")
    damaged.write_bytes(b"<html>quota exceeded</html>")
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    models.random_check.setChecked(False)
    models.select_models("sam_vit_b")
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    qtbot.waitUntil(lambda: "damaged" in widget.status_label.text(), timeout=20000)
    text = widget.status_label.text()
    assert text.startswith(f"Preview failed: the downloaded weights of sam_vit_b ({damaged}) are "
                           "damaged (")
    assert "delete that file and click 'Download' next to the model" in text
    assert "resolve_weights" not in text and "offline" not in text
