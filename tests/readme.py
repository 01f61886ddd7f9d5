"""The README's code blocks, as the tests that run them read them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def section_blocks(title: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block in the README section ``## title``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def quickstart_files() -> dict[str, str]:
    """The user's app exactly as the README prints it: ``myapp/__init__.py`` and ``myapp/oven.py``.

    Each block starts with a ``# path`` comment; "(continued)" blocks append to their file.
    """
    files: dict[str, str] = {}
    blocks = section_blocks("Quickstart: an app of your own") + section_blocks("Background tasks and subscriptions")
    for lang, body in blocks:
        first = body.splitlines()[0] if body else ""
        if lang != "python" or not first.startswith("# myapp/"):
            continue
        path = first[2:].split()[0]
        files[path] = files.get(path, "") + body
    assert set(files) == {"myapp/__init__.py", "myapp/oven.py"}, f"the README's app lost a file: {sorted(files)}"
    return files
