"""micro-sam's MobileSAM fine-tune chosen in the widget with a local file in torch_em's training
layout: the preview runs on it (architecture told from the file)."""

from __future__ import annotations

import pytest
from widget_helpers import synthetic_stack, wait_preview

from checkpoint_files import fine_tuned_state, write_torch_em

pytestmark = pytest.mark.gui


def test_micro_sam_vit_t_from_a_torch_em_file_previews(make_widget, tmp_path, qtbot):
    weights = write_torch_em(tmp_path / "vit_t_lm.pt", fine_tuned_state("sam_vit_t", seed=2))
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    models.random_check.setChecked(False)
    models.select_models("vit_t_lm")
    assert models.interactive_combo.currentText().startswith("µSAM light microscopy ViT-T")
    models.set_local_file(str(weights))
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    wait_preview(qtbot, widget, timeout=120000)
    loaded = widget.controller.holder.current.interactive
    assert loaded.weights == str(weights) and loaded.net.config.name == "sam_vit_t"
    assert "failed" not in widget.status_label.text()
