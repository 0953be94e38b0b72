"""The documentation covers the package: every public name has an API entry, every guide starts
with an example that runs, the README stays short. (`mkdocs build --strict` in .ci/run checks
the links and that every entry resolves; tests/test_docs_examples.py runs the examples.)"""

from __future__ import annotations

import pathlib
import re

import pytest
from test_docs_examples import python_blocks

import jax_unsampler

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# `::: package.name` lines: mkdocstrings' entries.
_ENTRY = re.compile(r"^:::\s+(\S+)\s*$", re.M)


def api_entries(page: str, package: str) -> set[str]:
    """The names `page` documents directly under `package` (`::: package.name`; submodules aside)."""
    entries = _ENTRY.findall((DOCS / "api" / page).read_text())
    names = {e.split(".", 1)[1] for e in entries if e.startswith(package + ".") and e.count(".") == 1}
    return {n for n in names if not (ROOT / package / f"{n}.py").exists()}


def torch_bridge_public_names() -> set[str]:
    torch_bridge = pytest.importorskip("torch_bridge", reason="torch_bridge needs torch")
    names = getattr(torch_bridge, "__all__", None)
    if names is None:  # every name the package binds without a leading underscore, modules aside
        names = [n for n, v in vars(torch_bridge).items() if not n.startswith("_") and not _is_module(v)]
    return set(names)


def _is_module(value) -> bool:
    return type(value).__name__ == "module"


def test_every_public_name_of_jax_unsampler_has_an_api_entry():
    documented = api_entries("jax_unsampler.md", "jax_unsampler")
    assert set(jax_unsampler.__all__) - documented == set(), "add these to docs/api/jax_unsampler.md"
    assert documented - set(jax_unsampler.__all__) == set(), "not public names of jax_unsampler"


def test_every_public_name_of_torch_bridge_has_an_api_entry():
    public = torch_bridge_public_names()
    documented = api_entries("torch_bridge.md", "torch_bridge")
    assert public - documented == set(), "add these to docs/api/torch_bridge.md"
    assert documented - public == set(), "not public names of torch_bridge"


def test_the_api_check_can_fail(tmp_path, monkeypatch):
    """A name missing from a page is seen as missing (the check above is not vacuous)."""
    api = tmp_path / "api"
    api.mkdir()
    text = (DOCS / "api" / "jax_unsampler.md").read_text()
    (api / "jax_unsampler.md").write_text(text.replace("::: jax_unsampler.sample\n", ""))
    monkeypatch.setattr(__import__("test_docs"), "DOCS", tmp_path)
    assert "sample" not in api_entries("jax_unsampler.md", "jax_unsampler")
    assert "noised_latents" in api_entries("jax_unsampler.md", "jax_unsampler")


def nav_pages() -> dict[str, list[str]]:
    """mkdocs.yml's nav: section title -> its pages (read without a YAML library)."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in (ROOT / "mkdocs.yml").read_text().split("nav:", 1)[1].splitlines()[1:]:
        if line and not line.startswith(" "):
            break
        section = re.match(r"^  - ([^:]+):\s*$", line)
        page = re.match(r"^\s+- [^:]+:\s*(\S+\.md)\s*$", line)
        if section:
            current = section.group(1)
        elif page:
            sections.setdefault(current, []).append(page.group(1))
    return sections


GUIDES = nav_pages().get("Guides", [])


def test_the_nav_has_the_guides():
    assert {"getting-started.md", "command.md", "comfyui.md", "mixing.md", "inversion.md"} <= set(GUIDES)


@pytest.mark.parametrize("guide", GUIDES)
def test_every_guide_starts_with_a_runnable_example(guide):
    page = DOCS / guide
    first_section = page.read_text().find("\n## ")
    blocks = [b for b in python_blocks(page) if b.run]
    assert blocks, f"{guide} has no runnable Python example"
    first_line = page.read_text()[: first_section if first_section >= 0 else None].count("\n") + 1
    assert blocks[0].line < first_line, f"{guide}: put a runnable example before the first section"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail into docs/"


def _without_docstring(module) -> list[str]:
    import inspect

    objects = {f"{module.__name__}.{name}": getattr(module, name) for name in module.__all__}
    return [
        name
        for name, obj in objects.items()
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj)
    ]


def test_every_public_function_has_a_docstring():
    """A docstring built by concatenation is an expression, not a docstring: the API page would
    be empty. Every public function and class of jax_unsampler has a literal one."""
    import jax_unsampler as ju

    assert not _without_docstring(ju)


def test_every_public_function_of_torch_bridge_has_a_docstring():
    tb = pytest.importorskip("torch_bridge", reason="torch_bridge needs torch")
    assert not _without_docstring(tb)


def test_the_samplers_table_is_the_registrys():
    """docs/samplers.md's table is written from `_steps.SAMPLER_STEPS` (a sampler added,
    renamed or given an option changes the page, or this fails)."""
    import importlib.util

    path = ROOT / "tools" / "make_samplers_table.py"
    spec = importlib.util.spec_from_file_location("make_samplers_table", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    page = (ROOT / "docs" / "samplers.md").read_text()
    assert tool.render(page) == page, "run python tools/make_samplers_table.py"
    assert page.count("\n| `") == len(jax_unsampler.SAMPLERS)
