"""The README's Python example runs as written and says what it returns."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def run_example(heading: str) -> dict:
    """Run the first Python block after `heading` in the README; returns its namespace."""
    text = README.read_text()
    section = text[text.index(heading) :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace


def test_python_example_runs():
    namespace = run_example("## Python example")
    assert namespace["batch"].shape == (30, 4, 128, 128)
    assert namespace["z"].shape == (30, 4, 128, 128)
    assert namespace["full"].shape == (30 + 1,)


def test_mixing_example_runs():
    namespace = run_example("## Iterative mixing")
    assert namespace["mixed"].shape == (1, 4, 32, 32) and namespace["plain"].shape == (1, 4, 32, 32)
    assert namespace["c1"].shape == (20,)
    assert namespace["out"].shape == (1, 4, 32, 32)
    # Mixing keeps the path near the latent (the toy denoiser alone shrinks it towards 0).
    lat = namespace["latent"]
    assert float(abs(namespace["mixed"] - lat).mean()) < float(abs(namespace["plain"] - lat).mean())
