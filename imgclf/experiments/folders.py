"""What a cross-validation and a search share about their folders: finding the one ``--resume`` continues."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..run import check_run_name


def resumed(project: Path, name: str | None, spec_file: str, missing: str) -> tuple[Path, dict[str, Any]]:
    """The folder ``name`` under ``project`` (default: the latest one holding ``spec_file``) and its spec; a
    one-line ``missing`` error when there is none."""
    if name:
        folder = project / check_run_name(name)
    else:
        found = sorted(project.glob(f"*/{spec_file}"), key=lambda p: p.stat().st_mtime)
        folder = found[-1].parent if found else project
    if not (folder / spec_file).exists():
        raise UserError(missing)
    return folder, json.loads((folder / spec_file).read_text(encoding="utf-8"))
