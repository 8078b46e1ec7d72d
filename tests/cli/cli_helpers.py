"""Walk the ``napari-focsam`` parser."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of `parser` by name (empty for a leaf)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaf_parsers(parser: argparse.ArgumentParser,
                 words: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``("weights list", parser), ...``: every command that runs something."""
    children = subparsers(parser)
    if not children:
        yield " ".join(words), parser
    for name, child in children.items():
        yield from leaf_parsers(child, (*words, name))
