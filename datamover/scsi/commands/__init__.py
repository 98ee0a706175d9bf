"""Command families: one module per family, each exposing ``COMMANDS``.

To add a family (e.g. ``thin.py`` with UNMAP, WRITE SAME and GET LBA STATUS), write the
module and add it to :data:`FAMILIES`; the LU's default table picks it up. Families that
need LU state keep it on the LU (or in an object the family attaches to it) and expose
``setup(lu)``, which every new :class:`~datamover.scsi.lu.LogicalUnit` calls once.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from datamover.scsi.commands import (
    block_io,
    capacity,
    compare,
    inquiry,
    media,
    mode,
    mode_select,
    opcodes,
    reservations,
    sanitize,
    status,
    thin,
    xcopy,
)
from datamover.scsi.commands.table import CommandSpec, CommandTable

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["FAMILIES", "CommandSpec", "CommandTable", "default_table", "setup_families"]

#: the command families every LogicalUnit gets
FAMILIES: tuple[ModuleType, ...] = (
    status,
    inquiry,
    capacity,
    block_io,
    mode,
    mode_select,
    thin,
    compare,
    opcodes,
    media,
    sanitize,
    reservations,
    xcopy,
)


def default_table() -> CommandTable:
    """A fresh table holding every command of every family in :data:`FAMILIES`."""
    table = CommandTable()
    for family in FAMILIES:
        for spec in family.COMMANDS:
            table.register(spec)
    return table


def setup_families(lu: LogicalUnit) -> None:
    """Let each family that keeps per-LU state (pages, limits, reservations) set it up."""
    for family in FAMILIES:
        setup = getattr(family, "setup", None)
        if setup is not None:
            setup(lu)
