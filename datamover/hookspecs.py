"""Hook specifications of datamover (pluggy).

Every hook is prefixed ``datamover_``. A plugin module implements them with
:data:`datamover.plugin.hookimpl` and is listed under the ``datamover.transports`` entry-point
group. The built-in transports are registered the same way as third-party ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from datamover.plugin import TransportRegistry

PROJECT_NAME = "datamover"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def datamover_register_transports(registry: TransportRegistry) -> None:
    """Register transport classes with ``registry.add_transport(cls)``.

    Called once, when the plugin manager is first built (the first time a command, a test
    or the library asks for the transports), after every entry-point plugin is loaded.
    A plugin may register several transports; a name registered twice is an error that
    names both distributions.
    """
