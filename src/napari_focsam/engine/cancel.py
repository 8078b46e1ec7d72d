"""Stopping a model in the middle of a forward pass when the user cancels.

A frame of propagation or encoding can take seconds to minutes on a CPU; checking a cancel
event only between frames leaves the user waiting that long. `stop_on` registers a forward
pre-hook on every block of the given modules (each member of an ``nn.ModuleList``: transformer
blocks, memory-attention layers, decoder layers) that raises `Interrupted` once the event is
set, so the pass stops at the next block. Callers only mutate their state after a forward
returns, so an interrupted pass leaves nothing half-done.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import nn

from ..errors import Cancelled

__all__ = ["Interrupted", "stop_on"]


class Interrupted(Cancelled):
    """A forward pass stopped because its cancel event was set."""


def _blocks(module: nn.Module) -> Iterator[nn.Module]:
    for child in module.modules():
        if isinstance(child, nn.ModuleList):
            yield from child


@contextlib.contextmanager
def stop_on(event: threading.Event | None, *modules: nn.Module) -> Iterator[None]:
    """Within the block, raise `Interrupted` from the next block of `modules` this thread runs
    once `event` is set (other threads using the same modules are not affected; no-op for a
    None event).

    Parameters
    ----------
    event : threading.Event or None
        The cancel event.
    *modules : nn.Module
        Models whose blocks (members of any ``nn.ModuleList`` inside them) check the event.
    """
    if event is None:
        yield
        return

    thread = threading.get_ident()

    def check(_module: nn.Module, _inputs: object) -> None:
        if event.is_set() and threading.get_ident() == thread:
            raise Interrupted("stopped on request")

    handles = [block.register_forward_pre_hook(check) for module in modules
               for block in _blocks(module)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
