"""The settings page is generated from the Settings class, so it lists exactly the service's settings."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from app.settings import Settings
from tests.conftest import ROOT


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_lists_every_setting_once_with_its_description() -> None:
    table = _hooks().settings_table()
    documented = re.findall(r"^\| `(VITRINE_[A-Z0-9_]+)` \|", table, re.MULTILINE)
    assert sorted(documented) == sorted(f"VITRINE_{name.upper()}" for name in Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description to document"
        row = next(line for line in table.splitlines() if line.startswith(f"| `VITRINE_{name.upper()}` |"))
        assert re.split(r"[`<>|]", field.description)[0][:30] in row


def test_bounds_and_choices_come_from_the_fields() -> None:
    rows = {line.split("|")[1].strip(): line for line in _hooks().settings_table().splitlines()[2:]}
    assert ">= 1, <= 65535" in rows["`VITRINE_PORT`"]
    assert "`auto` / `cpu` / `cuda`" in rows["`VITRINE_PROVIDERS`"]
    assert "usable CPUs" in rows["`VITRINE_INTRA_OP_THREADS`"]
    assert "(empty)" in rows["`VITRINE_API_KEYS`"]


def test_the_settings_page_has_the_marker_the_hook_fills() -> None:
    hooks = _hooks()
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert page.count(hooks.MARKER) == 1
    assert "tools/docs_hooks.py" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_pages_name_only_settings_that_exist() -> None:
    # Hand-written pages mention settings by name; a renamed or removed setting must not linger there.
    known = {f"VITRINE_{name.upper()}" for name in Settings.model_fields}
    # Variables of the deployment files and scripts, not of the service.
    known |= {"VITRINE_CPUS", "VITRINE_PUBLISH"}
    stale = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        if page.parent.name == "decisions":
            continue  # records name the settings as they were when measured
        stale |= {f"{page.name}: {v}" for v in re.findall(r"VITRINE_[A-Z0-9_]*[A-Z0-9]", text) if v not in known}
    assert not stale, sorted(stale)
