"""Documentation that is generated from code stays in step with it."""

from __future__ import annotations

from pathlib import Path

from p2pkube.settings import render_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_settings_doc_lists_every_setting_with_its_default() -> None:
    assert (DOCS / "settings.md").read_text() == render_markdown(), (
        "docs/settings.md is stale: run `python -m p2pkube.settings > docs/settings.md`"
    )
