"""Write the samplers table of docs/samplers.md from the registry (`_steps.SAMPLER_STEPS`).

    python tools/make_samplers_table.py [--check]

The table sits between the page's `<!-- samplers table -->` markers; `--check` exits non-zero
when the page's table is not the registry's (tests/test_docs.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "samplers.md"
BEGIN, END = "<!-- samplers table -->", "<!-- end of samplers table -->"


def table() -> str:
    sys.path.insert(0, str(ROOT))
    from jax_unsampler._names import INVERSION_SAMPLERS, MIXING_SAMPLERS, SAMPLERS
    from jax_unsampler._steps import SAMPLER_STEPS

    rows = [
        "| sampler | family | denoiser calls a step | order | noise draws a step | uses | mixing blends "
        "| options |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in SAMPLERS:
        spec = SAMPLER_STEPS[name]
        uses = ["sample"] + ["mix"] * (name in MIXING_SAMPLERS) + ["invert"] * (name in INVERSION_SAMPLERS)
        blend = (
            "—"
            if not spec.fixed_grid
            else ("before the noise" if spec.blend_before_noise else "after the step")
        )
        options = ", ".join(f"`{k}={v!r}`" for k, v in spec.options) or "—"
        calls = f"{spec.calls}" if spec.fixed_grid else "adaptive"
        rows.append(
            f"| `{name}` | {spec.family} | {calls} | {spec.order} | {spec.draws} | {' / '.join(uses)} "
            f"| {blend} | {options} |"
        )
    return "\n".join(rows)


def render(page: str) -> str:
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE.relative_to(ROOT)}: the samplers table is not the registry's; run {__file__}")
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
