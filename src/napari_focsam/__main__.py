"""``python -m napari_focsam`` runs the command line."""

from .cli import run

run()
