"""The README: short, the two make commands first, a real API call and its answer on the first screen."""

from __future__ import annotations

import json
import re

from tests.conftest import CATALOGUE, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
FIRST_SCREEN = 60  # lines


def _blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)


def test_readme_is_short() -> None:
    assert len(README.splitlines()) <= 200


def test_first_commands_are_make_serve_and_make_test() -> None:
    first = _blocks(README)[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == ["make serve", "make test"]


def test_api_call_and_its_answer_are_on_the_first_screen() -> None:
    top = "\n".join(README.splitlines()[:FIRST_SCREEN])
    assert "curl" in top and "/classify" in top
    answers = [b for b in _blocks(top) if b.lstrip().startswith("{")]
    assert answers, "no JSON answer on the first screen"
    answer = json.loads(answers[0])
    assert answer["results"][0]["status"] == "ok"


def test_curl_examples_use_committed_catalogue_photos() -> None:
    photos = re.findall(r"tests/data/catalogue/(\w+\.jpg)", README)
    assert len(photos) >= 3
    for name in photos:
        assert (CATALOGUE / name).is_file(), name


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_markdown_links_point_to_files_that_exist() -> None:
    # mkdocs --strict checks links between docs pages; this covers the README, the changelog and model cards.
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for path in [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "models").rglob("*.md"))]:
        for target in link.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_links_reach_pages_of_the_site() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = re.findall(r"\]\(docs/([^)#\s]+)", README)
    assert pages
    for page in pages:
        assert page in nav, f"docs/{page} is linked from the README but not in the site's navigation"
