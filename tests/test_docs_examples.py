"""Every example in README.md and docs/*.md prints what the docs show (docs/examples.py runs them)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("doc_examples", ROOT / "docs" / "examples.py")
doc_examples = importlib.util.module_from_spec(spec)
sys.modules["doc_examples"] = doc_examples  # dataclasses look their module up there
spec.loader.exec_module(doc_examples)

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_output_shown_is_what_the_code_prints(path):
    for shown, printed in doc_examples.run_file(path):
        assert doc_examples.same(shown.body, printed), (
            f"{path.name}: an example's output is stale; run `python docs/examples.py` and review the diff.\n"
            f"shown:\n{shown.body}\nprinted now:\n{printed}")
        changed = _change_one_character(shown.body)
        assert not doc_examples.same(changed, printed), f"a changed output would not be caught:\n{changed}"


def _change_one_character(text: str) -> str:
    """The output with one letter of its last line changed (what an edit or a code change does)."""
    lines = text.rstrip("\n").splitlines()
    for i in range(len(lines) - 1, -1, -1):
        for j in range(len(lines[i]) - 1, -1, -1):
            if lines[i][j].isalpha():
                lines[i] = lines[i][:j] + ("x" if lines[i][j] != "x" else "y") + lines[i][j + 1:]
                return "\n".join(lines) + "\n"
    return text + "extra line\n"


def test_the_comparison_ignores_speeds_but_not_results():
    same = doc_examples.same
    assert same("loss 1.2345\n", "loss 1.2346\n")  # last digits on another CPU
    assert not same("loss 1.2345\n", "loss 1.2945\n")
    assert not same("LMNOP\n", "LMNOQ\n")
    assert same("epoch 1: 6,135 chars/s\n", "epoch 1: 44,000 chars/s\n")
    table = ("┃ epoch ┃ val loss ┃ chars/s ┃\n"
             "│     1 │   0.3480 │   6,135 │\n")
    assert same(table, table.replace("6,135", "9,999"))
    assert not same(table, table.replace("0.3480", "0.3980"))
    assert not same("a\n", "a\nb\n")


def test_examples_run_in_order_and_a_stale_output_is_reported(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```console\n$ echo one\none\n```\n\n```python\nx = 41\nprint(x + 1)\n```\n```output\n42\n```\n\n"
                   "```python\nprint(x)\n```\n```output\n40\n```\n", encoding="utf-8")
    results = doc_examples.run_file(doc)
    assert [doc_examples.same(s.body, p) for s, p in results] == [True, True, False]
    assert doc_examples.main(["--check", str(doc)]) == 1
    assert doc_examples.main([str(doc)]) == 0  # rewrites the stale output
    assert doc_examples.main(["--check", str(doc)]) == 0
    assert "```output\n41\n```" in doc.read_text(encoding="utf-8")


def test_every_test_the_docs_name_exists():
    """The reliability table and others cite tests as `test_file.py::test_name`: each must be a real test."""
    import re

    cited = set()
    for path in DOCS:
        cited |= {(f, t) for f, t in re.findall(r"`?(test_\w+\.py)::(test_\w+)", path.read_text(encoding="utf-8"))}
    assert len(cited) > 20  # the pattern finds them
    missing = []
    for file, name in sorted(cited):
        source = ROOT / "tests" / file
        if not source.exists() or not re.search(rf"^def {name}\(", source.read_text(encoding="utf-8"), re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"the docs cite tests that do not exist: {missing}"


def test_a_background_server_answers_the_examples_after_it_and_stops_with_the_file(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- examples: background python -m http.server {port} ready http://127.0.0.1:{port}/ -->\n"
                   f"```console\n$ python -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}/')"
                   f".status)\"\n200\n```\n", encoding="utf-8")
    [(shown, printed)] = doc_examples.run_file(doc)
    assert doc_examples.same(shown.body, printed), printed
    with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5)
