"""`python -m jax_unsampler`: the `jax-unsampler` command."""

from .app._cli import main

raise SystemExit(main())
