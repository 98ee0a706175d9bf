"""Command families: one module per family, each exposing ``COMMANDS``.

To add a family (e.g. ``thin.py`` with UNMAP, WRITE SAME and GET LBA STATUS), write the
module and add it to :data:`FAMILIES`; the LU's default table picks it up. Families that
need LU state keep it on the LU (or in an object the family attaches to it).
"""

from __future__ import annotations

from types import ModuleType

from datamover.scsi.commands import block_io, capacity, inquiry, mode, status
from datamover.scsi.commands.table import CommandSpec, CommandTable

__all__ = ["FAMILIES", "CommandSpec", "CommandTable", "default_table"]

#: the command families every LogicalUnit gets
FAMILIES: tuple[ModuleType, ...] = (status, inquiry, capacity, block_io, mode)


def default_table() -> CommandTable:
    """A fresh table holding every command of every family in :data:`FAMILIES`."""
    table = CommandTable()
    for family in FAMILIES:
        for spec in family.COMMANDS:
            table.register(spec)
    return table
