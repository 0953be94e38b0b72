"""`python -m jax_unsampler`: the `jax-unsampler` command."""

from ._cli import main

raise SystemExit(main())
