"""Pure PyTorch model code: SAM (and later FocSAM, SAM 2).

Nothing in this package imports Qt or napari.
"""
