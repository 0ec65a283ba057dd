"""GDB commands, one module each.  ``register_all`` instantiates them."""

import importlib

_MODULES = ()  # filled as commands land: ("nsb_patch", "nsb_revert", ...)


def register_all():
    for name in _MODULES:
        importlib.import_module("gdb_nsb.commands." + name).register()
