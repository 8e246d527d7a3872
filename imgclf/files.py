"""The tool's own CSV files, safe to open in a spreadsheet, and I/O failures as one line.

A cell that begins with ``= + - @``, a tab or a carriage return is run as a formula by Excel, LibreOffice and
Google Sheets (``=HYPERLINK(...)`` in a file or class name becomes a link that leaks data). OWASP's advice is a
leading ``'``, which spreadsheets hide; :func:`read_cell` removes it again, so files imgclf reads back (``predict
--resume``, a cleaned list for ``train``) hold the names as they were. Numbers are never escaped.
"""
from __future__ import annotations

import csv
import errno
import shutil
from pathlib import Path
from typing import IO, Any, Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def safe_cell(value: Any) -> Any:
    """``value`` as a spreadsheet will show it and never run it. A string already starting with ``'`` before one
    of those characters gets one more, so that :func:`read_cell` gives back exactly what was written."""
    if not isinstance(value, str) or not value or _is_number(value):
        return value
    if value[0] in FORMULA_START or value[0] == "'" and value[1:2] and value[1] in FORMULA_START + ("'",):
        return "'" + value
    return value


def read_cell(value: Any) -> Any:
    """The inverse of :func:`safe_cell`."""
    if isinstance(value, str) and value[:1] == "'" and value[1:2] and value[1] in FORMULA_START + ("'",):
        return value[1:]
    return value


class CsvWriter:
    """``csv.writer`` whose every cell goes through :func:`safe_cell`."""

    def __init__(self, f: IO[str]) -> None:
        self._writer = csv.writer(f)

    def writerow(self, row: Iterable) -> None:
        self._writer.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable]) -> None:
        for row in rows:
            self.writerow(row)


def write_csv(path: Path, rows: list[dict] | list[list], header: list[str] | None = None) -> None:
    """A whole CSV file: ``header`` then ``rows`` (dicts, keyed by the header, which defaults to the first row's
    keys; or lists), every cell spreadsheet-safe."""
    if header is None:
        header = list(rows[0]) if rows and isinstance(rows[0], dict) else []
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = CsvWriter(f)
        if header:
            writer.writerow(header)
        writer.writerows([r.get(k, "") for k in header] if isinstance(r, dict) else r for r in rows)


def describe_os_error(exc: OSError, where: str | None = None) -> str:
    """One line for a failed read or write: what failed, where, and what to do."""
    name = exc.filename or where
    at = f" ({name})" if name else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = Path(name or ".").expanduser()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free / 2**20 if folder.exists() else None
        left = f", {free:,.0f} MB left" if free is not None else ""
        return f"the disk is full{at}{left}: free some space, or write elsewhere (--project, --output)"
    if exc.errno == errno.ENAMETOOLONG:
        return f"file name too long{at}: use a shorter --name or path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror or 'permission denied'}{at}: choose a folder you can write to"
    return f"{exc.strerror or exc}{at}"
