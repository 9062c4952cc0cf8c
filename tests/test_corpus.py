import io
import sys

import pytest

from chargen.corpus import read_text
from chargen.errors import CorpusError


def test_reads_utf8_file_and_strips_bom(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("\ufeffhé\n中".encode("utf-8"))
    assert read_text(p) == "hé\n中"


def test_folder_is_sorted_txt_files_joined_by_newline(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "c.md").write_text("ignored", encoding="utf-8")
    assert read_text(tmp_path) == "first\nsecond"


@pytest.mark.parametrize("content, needle", [
    (b"", "empty"),
    (b" \n\t \n", "only whitespace"),
    (b"abc\xff\xfedef", "byte offset 3"),
    (b"ok\x00\x01binary", "byte offset 2"),
])
def test_bad_files_say_what_is_wrong(tmp_path, content, needle):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(CorpusError, match=needle):
        read_text(p)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="no .txt files"):
        read_text(tmp_path)


def test_stdin_dash(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("from a pipe".encode())))
    assert read_text("-") == "from a pipe"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(CorpusError, match="0 bytes"):
        read_text("-")
