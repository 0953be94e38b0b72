"""Runs ComfyUI's `main.py` for the server test: `python comfyui_main.py COMFYUI_PATH [main.py options]`.

ComfyUI's start-up imports torchvision, torchaudio, kornia and spandrel, which may be missing or
may not load beside a CPU-only torch (installing them would replace it); where one does not
import, a stand-in module takes its place (`comfyui_stand_ins.stand_in_if_broken`), as in the in-process
ComfyUI tests. The nodes the server test runs never use them.
"""

from __future__ import annotations

import os
import runpy
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    # Not conftest (it needs pytest, which ComfyUI's environment need not have).
    from comfyui_stand_ins import stand_in_if_broken

    stand_in_if_broken("torchvision", "torchaudio", "kornia", "spandrel")
    root = os.path.abspath(sys.argv[1])
    sys.path[0] = root  # as `python main.py` would have it; the tests folder is not needed any more
    sys.argv = [os.path.join(root, "main.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
