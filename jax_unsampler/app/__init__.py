"""The application layer: the `jax-unsampler` command, its demo latent, previews and plots.

It sits on top of the core (`jax_unsampler`) and `jax_unsampler.latent_file`; the core never
imports it. Pillow and matplotlib (the `viz` extra) load only when a preview or plot is asked
for.
"""

from ._cli import main as main
