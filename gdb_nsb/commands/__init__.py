"""GDB commands, one module each.  ``register_all`` instantiates them."""

import importlib

_MODULES = ("nsb_patch", "nsb_revert", "nsb_list", "nsb_check")
_registered = False


def register_all():
    global _registered
    if _registered:
        return
    from gdb_nsb.commands.common import register_settings
    from gdb_nsb.process import autoregister, detach
    register_settings()
    detach.install_exit_hook()
    autoregister.install()
    for name in _MODULES:
        importlib.import_module("gdb_nsb.commands." + name).register()
    _registered = True
