"""The design document the code cites is in the repository, and every section cited exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "DESIGN.md"
CITED_DIRS = ("thread_bench", "analysis", "benchmarks", "tests", "scripts")


def _sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "MLproject"]
    for name in CITED_DIRS:
        files += sorted((ROOT / name).rglob("*.py"))
    return files


def test_every_cited_design_section_exists() -> None:
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", DESIGN.read_text(encoding="utf-8"), flags=re.M))
    assert {"2.1", "3", "5", "7"} <= sections, sections
    cited = {
        (path.relative_to(ROOT).as_posix(), number)
        for path in _sources()
        for number in re.findall(r"DESIGN\.md §(\d+(?:\.\d+)?)", path.read_text(encoding="utf-8"))
    }
    assert cited, "the code cites no section: the pattern is out of date"
    assert not {(path, number) for path, number in cited if number not in sections}


def test_nothing_points_outside_the_repository() -> None:
    """A user has only the repository: no file refers to a sibling folder such as ``../shared``."""
    here = Path(__file__).resolve()
    outside = [path for path in _sources() if path != here and "../shared" in path.read_text(encoding="utf-8")]
    assert outside == []
