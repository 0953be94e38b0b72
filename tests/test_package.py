"""Package hygiene: the public surface, lazy imports, no torch in the core, typed, one version."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import jax_unsampler as ju

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    probe = f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def _top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def test_core_never_imports_torch():
    # The core, the command and the name tables the node reads: none of them may load torch.
    code = (
        "import jax_unsampler as ju, jax_unsampler.app, jax_unsampler.latent_file;"
        "ju.preset('sd15').model_sampling; ju.SAMPLERS"
    )
    assert "torch" not in _top_level(_modules_after(code))


@pytest.mark.parametrize(
    "code, absent",
    [
        (
            "import jax_unsampler",
            {"jax", "jaxlib", "safetensors", "matplotlib", "PIL", "scipy", "flax", "numpy"},
        ),
        ("import jax_unsampler as ju; ju.SAMPLERS; ju.SCHEDULERS; ju.MAX_STEPS", {"jax", "numpy"}),
        ("import jax_unsampler as ju; ju.noised_latents", {"safetensors", "matplotlib", "PIL"}),
        ("import jax_unsampler.latent_file", {"jax", "matplotlib", "PIL"}),
    ],
)
def test_imports_are_lazy(code, absent):
    loaded = _top_level(_modules_after(code))
    assert not loaded & absent, sorted(loaded & absent)


def test_importtime_shows_no_app_library():
    # The issue's own check: `python -X importtime -c "import jax_unsampler"`.
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import jax_unsampler"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip().partition(".")[0] for line in out.stderr.splitlines()}
    assert "jax_unsampler" in imported
    assert not imported & {"safetensors", "matplotlib", "PIL", "scipy", "jax"}


def _type_checking_names() -> dict[str, str]:
    """`name -> module` of the `if TYPE_CHECKING:` imports of the package's `__init__.py`."""
    tree = ast.parse(pathlib.Path(ju.__file__).read_text())
    (block,) = [
        node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    names = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names:
            assert alias.asname == alias.name  # `name as name`: an explicit re-export
            names[alias.name] = node.module
    return names


def test_lazy_table_and_type_checking_imports_agree():
    assert _type_checking_names() == ju._EXPORTS


@pytest.mark.parametrize("name", sorted(ju._EXPORTS))
def test_every_public_name_resolves_from_its_module(name):
    import importlib

    module = importlib.import_module(f"jax_unsampler.{ju._EXPORTS[name]}")
    assert getattr(ju, name) is getattr(module, name)
    assert name in dir(ju)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'noised_latent'"):
        ju.noised_latent  # noqa: B018


def test_star_import_gives_the_public_names():
    namespace: dict = {}
    exec("from jax_unsampler import *", namespace)
    assert set(ju.__all__) <= set(namespace)


def test_init_only_reexports():
    tree = ast.parse(pathlib.Path(ju.__file__).read_text())
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert defined == {"__getattr__", "__dir__"}  # PEP 562's hooks, nothing else


def test_one_version_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    from importlib.metadata import version

    assert version("jax-unsampler") == ju.__version__


def test_py_typed_marker_is_shipped():
    assert (pathlib.Path(ju.__file__).parent / "py.typed").exists()


def test_presets_include_the_golden_families():
    from conftest import golden_sigmas

    assert set(golden_sigmas()["families"]) <= set(ju.presets())
    for name in ju.presets():
        p = ju.preset(name)
        assert p.latent_rank == p.latent_dimensions + 2
        assert p.model_sampling.sigmas.shape[0] >= 1000


def test_torch_bridge_uses_only_the_documented_contract_of_private_modules():
    """CONTRIBUTING.md's table "The bridge's contract" lists what torch_bridge may import from
    the core's private modules; anything else is a reach into internals."""
    import re

    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text.split("## The bridge's contract", 1)[1].split("\n## ", 1)[0]
    allowed: dict[str, set[str] | None] = {}
    for module, names in re.findall(r"^\| `(jax_unsampler\.[\w.]+)` \| (.+?) \|$", section, re.M):
        listed = set(re.findall(r"`(\w+)`", names))
        allowed[module] = listed or None  # no names listed: the whole module
    used: set[tuple[str, str]] = set()
    for path in (ROOT / "torch_bridge").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if isinstance(node, ast.ImportFrom) and module.startswith("jax_unsampler.") and "._" in module:
                used |= {(module, alias.name) for alias in node.names}
    assert used, "the bridge imports nothing private: the test would pass vacuously"
    outside = {
        (m, n) for m, n in used if m not in allowed or (allowed[m] is not None and n not in allowed[m])
    }
    assert not outside, (
        f"torch_bridge imports private names outside its documented contract: {sorted(outside)}"
    )


def test_scipy_loads_only_for_the_beta_scheduler():
    """Importing scipy.stats costs about 0.8 s: the node's first run pays it only for "beta"."""
    code = (
        "import sys, jax_unsampler as ju\n"
        "ms = ju.preset('sd15').model_sampling\n"
        "ju.unsampler_sigmas(ms, 'euler', 'karras', 20)\n"
        "assert 'scipy.stats' not in sys.modules\n"
        "ju.unsampler_sigmas(ms, 'euler', 'beta', 20)\n"
        "assert 'scipy.stats' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
