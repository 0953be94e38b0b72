"""`python -m torch_bridge install-comfyui-node COMFYUI_DIR`."""

import sys

from ._install import main

sys.exit(main())
