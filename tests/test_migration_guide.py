"""Every row of docs/migrating.md names a test, and that test exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "migrating.md"


def rows() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    return [line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| reference") and not set(line) <= set("|- ")]


def test_every_row_names_an_existing_test() -> None:
    found = rows()
    assert len(found) >= 40
    for row in found:
        named = re.findall(r"`(test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)`", row.split("|")[-2])
        assert named, f"no test named in: {row}"
        for file, function in named:
            source = (ROOT / "tests" / file).read_text(encoding="utf-8")
            assert re.search(rf"^(?:async )?def {function}\(", source, re.M), f"{file}::{function} does not exist"


def test_the_readme_links_the_guide() -> None:
    assert "docs/migrating.md" in (ROOT / "README.md").read_text(encoding="utf-8")
