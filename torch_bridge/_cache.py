"""The ComfyUI nodes' persistent compilation cache (see `jax_unsampler._compilation_cache`)."""

from __future__ import annotations

import pathlib

_done: list[pathlib.Path | None] = []


def enable_node_compilation_cache() -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache for this ComfyUI process, once.

    The folder is `jax-unsampler-xla-cache` in ComfyUI's user directory (or the folder that
    `JAX_UNSAMPLER_NODE_CACHE` names); `JAX_UNSAMPLER_NODE_CACHE=0` turns it off. Outside
    ComfyUI (no `folder_paths` module) nothing changes. The nodes call this when they first
    run; it imports JAX.

    **Returns:** the folder in use, or None when the cache stays off.
    """
    if not _done:
        from jax_unsampler._compilation_cache import comfyui_cache_dir, enable_compilation_cache

        folder = comfyui_cache_dir()
        _done.append(None if folder is None else enable_compilation_cache(folder))
    return _done[0]
