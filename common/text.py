"""Text files users hand us (labels CSVs, readers' response files): UTF-8 or a stop that says what was found."""
from __future__ import annotations

import codecs
from pathlib import Path


def read_utf8(path: Path, what: str) -> str:
    """The text of ``path`` as UTF-8 (a byte-order mark is dropped). Any other encoding stops with a ValueError
    naming the file, the line and the byte, never a guess: Excel's "CSV" on Windows writes cp1252 and its
    "Unicode text" UTF-16, and a wrong guess misreads names silently. A file that cannot be read stops alike.
    ``what`` says what the file is for."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:   # permission denied, a folder by that name, a disk error: a message, not a traceback
        raise ValueError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    fix = "save it as UTF-8 (Excel: \"CSV UTF-8\")"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError(f"{what} {path} is UTF-16 text (Excel's \"Unicode text\"); {fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{what} {path} is not UTF-8: byte {data[e.start:e.start + 1]!r} on line {line} "
                         f"(a Windows or Latin-1 encoding, most often); {fix}; it is not read by guessing its "
                         "encoding") from None
