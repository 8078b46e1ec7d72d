"""Benchmarks that print figures (speed, memory); run them with ``napari-focsam bench``."""
