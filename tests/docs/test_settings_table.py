"""The README documents every setting and its quick start is exactly the two make commands."""

from __future__ import annotations

import re

from app.settings import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_settings_table() -> None:
    documented = set(re.findall(r"^\| `(VITRINE_[A-Z_]+)` \|", README, re.MULTILINE))
    expected = {f"VITRINE_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_quick_start_is_make_serve_and_make_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in quick.splitlines()[1:] if line.strip()]
    assert commands == ["make serve", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_committed_markdown_links_to_files_that_exist() -> None:
    # Cards copied into export/results/ from packages outside models/ once linked plots that were not kept.
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for path in [
        ROOT / "README.md",
        *sorted((ROOT / "export" / "results").rglob("*.md")),
        *sorted((ROOT / "models").rglob("*.md")),
    ]:
        for target in link.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken
