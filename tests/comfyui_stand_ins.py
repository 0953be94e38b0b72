"""Stand-ins for the modules ComfyUI imports at start-up that may not load beside a CPU-only torch.

Kept apart from conftest.py (which needs pytest) so that the server's own Python, ComfyUI's
environment with only the pack's requirements.txt installed, can use them (comfyui_main.py).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types


class StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes any import of the named top-level modules (and their submodules) succeed with an
    empty module whose attributes are dummies: for ComfyUI's start-up imports (torchvision, av)
    that may not load beside a CPU-only torch and that model sampling never uses."""

    def __init__(self, *names: str):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+stand-in"

        def missing(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(
                attr, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: a}
            )

        module.__getattr__ = missing
        return module

    def exec_module(self, module):
        pass


def stand_in_if_broken(*names: str) -> None:
    """Import each module; where one fails, drop what it left and stand it in (`StandIns`)."""
    broken = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            for loaded in [n for n in sys.modules if n.partition(".")[0] == name]:
                del sys.modules[loaded]
            broken.append(name)
    if broken:
        sys.meta_path.insert(0, StandIns(*broken))
