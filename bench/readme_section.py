"""Replace one `## <name>` section of bench/README.md, leaving the other benchmarks' sections alone."""

from __future__ import annotations

import re
from pathlib import Path

from intentops.io import atomic_write_text

README = Path(__file__).resolve().parent / "README.md"


def write_section(name: str, section: str, path: Path = README) -> None:
    """Swap in `section` (which starts with `## name`) for the existing one, or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        updated = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        updated = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, updated.rstrip("\n") + "\n")
