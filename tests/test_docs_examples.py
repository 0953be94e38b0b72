"""Every Python example in README.md and docs/ runs as written, and says what it returns.

The rules (CONTRIBUTING.md, "Examples in the docs"):

- Every ```python block (also ```py) of a page runs, in the page's order, in one namespace
  per page, so a later block may use the names of an earlier one.
- A block fenced as ```python no-run, or preceded by the line `<!-- no-run -->`, is skipped:
  only for code that cannot run here (it needs ComfyUI, a real network, a file of yours).
- A line that ends in `# -> <Python literal>` states its value: the expression on that line
  is evaluated and compared with the literal. Ints, strings, bools, tuples and lists compare
  with `==` (a shape is `(30, 4, 128, 128)`); when the literal holds a float the comparison is
  `numpy.testing.assert_allclose` with rtol 1e-5 and atol 1e-6 (so a stated float need not
  be printed to every digit: write it to the digits you mean).
- A page whose code imports torch is skipped where torch is not installed.
- Examples run from the repository's root (a path such as `tests/data/...` is relative to it).
"""

from __future__ import annotations

import ast
import importlib.util
import io
import pathlib
import re
import tokenize
from dataclasses import dataclass

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

# A fenced block: its indentation (inside a list item), info string and body. Fences of three or
# more backticks, closed by the same at the same indentation.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
_NO_RUN_COMMENT = re.compile(r"<!--\s*no-run\s*-->\s*$")
_MARK = "# ->"


@dataclass
class Block:
    page: pathlib.Path
    line: int  # 1-based line of the block's first code line in the page
    code: str
    run: bool


def python_blocks(page: pathlib.Path) -> list[Block]:
    """The ```python blocks of a page, in order, each marked runnable or not."""
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        words = match.group("info").split()
        if not words or words[0] not in ("python", "py", "python3"):
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        run = "no-run" not in words[1:] and not _NO_RUN_COMMENT.search(before)
        line = text.count("\n", 0, match.start("body")) + 1
        indent = len(match.group("indent"))
        code = "".join(row[indent:] for row in match.group("body").splitlines(keepends=True))
        blocks.append(Block(page, line, code, run))
    return blocks


def _stated_values(code: str) -> dict[int, str]:
    """Line number -> the literal after `# ->` on that line, from the code's comments."""
    stated = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT and token.string.startswith(_MARK):
            stated[token.start[0]] = token.string[len(_MARK) :].strip()
    return stated


def check_value(actual, expected_source: str, where: str) -> None:
    """The `# ->` rule: `==` for exact literals, allclose where the literal holds a float."""
    expected = ast.literal_eval(expected_source)
    has_float = any(isinstance(v, float) for v in np.ravel(np.asarray(expected, dtype=object)))
    if has_float:
        np.testing.assert_allclose(
            np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
            rtol=1e-5, atol=1e-6, err_msg=f"{where}: states {expected_source}",
        )  # fmt: skip
        return
    if isinstance(actual, np.ndarray) or type(actual).__module__.startswith("jax"):
        actual = np.asarray(actual).tolist()
    assert actual == expected, f"{where}: states {expected_source}, got {actual!r}"


def _name(page: pathlib.Path) -> str:
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name


def compile_block(block: Block) -> object:
    """The block's code, each `expr  # -> literal` line turned into a check of that value."""
    name = _name(block.page)
    tree = ast.parse(block.code, filename=name)
    stated = _stated_values(block.code)
    checked = set()
    for i, node in enumerate(tree.body):
        if node.end_lineno in stated:
            if not isinstance(node, ast.Expr):
                raise AssertionError(
                    f"{name}:{block.line + node.end_lineno - 1}: `# ->` follows a statement, "
                    "not an expression"
                )
            where, literal = f"{name}:{block.line + node.end_lineno - 1}", stated[node.end_lineno]
            try:
                ast.literal_eval(literal)
            except (ValueError, SyntaxError):
                raise AssertionError(
                    f"{where}: `# ->` must be followed by a Python literal alone, got {literal!r}"
                ) from None
            call = ast.Call(
                func=ast.Name("__docs_check__", ast.Load()),
                args=[node.value, ast.Constant(literal), ast.Constant(where)],
                keywords=[],
            )
            tree.body[i] = ast.copy_location(ast.Expr(call), node)
            checked.add(node.end_lineno)
    missed = set(stated) - checked
    if missed:
        raise AssertionError(f"{name}:{block.line + min(missed) - 1}: `# ->` must end a top-level expression")
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, block.line - 1)  # tracebacks point at the page's own lines
    return compile(tree, name, "exec")


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p)]


def test_the_collector_finds_the_examples():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES_WITH_CODE}
    assert {"README.md", "docs/getting-started.md", "docs/mixing.md", "docs/inversion.md"} <= names


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page: pathlib.Path, monkeypatch):
    blocks = [b for b in python_blocks(page) if b.run]
    if not blocks:
        pytest.skip("every block is marked no-run")
    if importlib.util.find_spec("torch") is None and any(
        re.search(r"^\s*(import|from)\s+(torch|torch_bridge)\b", b.code, re.M) for b in blocks
    ):
        pytest.skip("the page's examples need torch")
    monkeypatch.chdir(ROOT)  # examples name the repository's files relative to its root
    namespace: dict = {"__name__": "__docs__", "__docs_check__": check_value}
    for block in blocks:
        exec(compile_block(block), namespace)  # noqa: S102 - the project's own documentation


# The collector's own rules, on made-up pages: each must be able to fail.


def _run(page: pathlib.Path) -> dict:
    namespace: dict = {"__docs_check__": check_value}
    for block in python_blocks(page):
        if block.run:
            exec(compile_block(block), namespace)  # noqa: S102 - made-up pages of these tests
    return namespace


@pytest.fixture
def scratch_page(tmp_path):
    def write(text: str) -> pathlib.Path:
        page = tmp_path / "page.md"
        page.write_text(text)
        return page

    return write


def test_stated_values_are_checked(scratch_page):
    ok = scratch_page("```python\nx = (1, 2)\nx  # -> (1, 2)\n1 / 3  # -> 0.333333\n```\n")
    assert _run(ok)["x"] == (1, 2)
    wrong = scratch_page("```python\nx = (1, 2)\nx  # -> (1, 3)\n```\n")
    with pytest.raises(AssertionError, match=r"states \(1, 3\)"):
        _run(wrong)
    wrong_float = scratch_page("```python\n1 / 3  # -> 0.3334\n```\n")
    with pytest.raises(AssertionError):
        _run(wrong_float)


def test_blocks_share_a_namespace_and_no_run_is_skipped(scratch_page):
    page = scratch_page(
        "```python\na = 2\n```\n\ntext\n\n```python no-run\nraise RuntimeError\n```\n\n"
        "<!-- no-run -->\n```python\nraise RuntimeError\n```\n\n```python\nb = a * 3\nb  # -> 6\n```\n"
        "\n```bash\nexit 1\n```\n"
    )
    assert [b.run for b in python_blocks(page)] == [True, False, False, True]
    assert _run(page)["b"] == 6


def test_blocks_inside_list_items_are_found(scratch_page):
    page = scratch_page("- an item:\n\n    ```python\n    c = 5\n    c  # -> 5\n    ```\n")
    assert [b.code for b in python_blocks(page)] == ["c = 5\nc  # -> 5\n"]
    assert _run(page)["c"] == 5


def test_a_mark_on_a_statement_or_without_a_literal_is_refused(scratch_page):
    page = scratch_page("```python\nx = 1  # -> 1\n```\n")
    with pytest.raises(AssertionError, match="not an expression"):
        _run(page)
    page = scratch_page("```python\n1 + 1  # -> 2, the sum\n```\n")
    with pytest.raises(AssertionError, match="a Python literal alone"):
        _run(page)
