"""Every case of the bad-input catalogue: exit code, one line naming the file or field, no partial output,
nothing deleted that the command did not write; and the README's table in sync with the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.bad_inputs import CASES, README, Case, Kit, problems, readme_with_table, run_case


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    """The pristine inputs, built once for the module."""
    return Kit(tmp_path_factory.mktemp("kit"))


def test_the_catalogue_has_at_least_40_cases_in_every_area() -> None:
    assert len(CASES) >= 40
    areas = {c.area for c in CASES}
    assert areas >= {"sources", "shards", "cards", "recipes", "checkpoints", "tokenizers", "cli", "evaluation"}


@pytest.mark.parametrize("item", CASES, ids=[c.name for c in CASES])
def test_bad_input(item: Case, kit: Kit, tmp_path: Path) -> None:
    outcome = run_case(item, kit, tmp_path / "case")
    assert problems(item, outcome, tmp_path / "case") == [], outcome.stderr


def test_readme_table_is_generated_from_the_catalogue() -> None:
    text = README.read_text(encoding="utf-8")
    assert readme_with_table(text) == text, "run: python -m tests.reliability.bad_inputs --write-readme"
