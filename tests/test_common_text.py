"""common/text.py: UTF-8 read as is (a byte-order mark dropped); any other encoding stops naming line and byte."""
import codecs

import pytest

from common.text import read_utf8


def test_utf8_with_and_without_a_byte_order_mark(tmp_path):
    path = tmp_path / "a.csv"
    for data in ("id,name\n1,Müller\n".encode(), codecs.BOM_UTF8 + "id,name\n1,Müller\n".encode()):
        path.write_bytes(data)
        assert read_utf8(path, "labels file") == "id,name\n1,Müller\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_its_mark_is_named(tmp_path, encoding):
    path = tmp_path / "a.csv"
    text = "id,name\n1,x\n"
    path.write_bytes((codecs.BOM_UTF16_LE if encoding == "utf-16-le" else
                      codecs.BOM_UTF16_BE if encoding == "utf-16-be" else b"") + text.encode(encoding))
    with pytest.raises(ValueError, match=r"labels file .*a\.csv is UTF-16 text"):
        read_utf8(path, "labels file")


def test_a_windows_encoding_stops_at_its_first_foreign_byte(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("id,name\n1,Smith\r\n2,Müller\n3,Dvořák\n".encode("cp1250"))
    with pytest.raises(ValueError, match=r"a\.csv is not UTF-8: byte b'\\xfc' on line 3 .*CSV UTF-8"):
        read_utf8(path, "response file")


def test_a_file_that_cannot_be_read_is_named(tmp_path):
    (tmp_path / "a.csv").mkdir()   # as root every permission is granted; a folder by the name fails alike
    with pytest.raises(ValueError, match=r"labels file .*a\.csv cannot be read: Is a directory"):
        read_utf8(tmp_path / "a.csv", "labels file")
