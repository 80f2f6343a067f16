"""docs/study-config.md lists every study option at its default: the listing must stay the built-in study."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from calohls.config import STUDY_PRESETS, StudyConfig

DOC = Path(__file__).parents[2] / "docs" / "study-config.md"


def _yaml_block(after: str) -> dict:
    text = DOC.read_text()
    block = re.search(re.escape(after) + r".*?```yaml\n(.*?)```", text, re.S)
    assert block, f"no YAML block after {after!r} in {DOC}"
    return yaml.safe_load(block.group(1))


def test_every_option_listing_is_the_built_in_study():
    listed = _yaml_block("## Every option, at its default")
    assert StudyConfig.model_validate(listed).model_dump(mode="json") == StudyConfig().model_dump(mode="json")
    # and it names every option, section by section
    defaults = StudyConfig().model_dump(mode="json")
    assert set(listed) == set(defaults)
    for section in ("sim", "train", "qat", "ptq", "firmware"):
        assert set(listed[section]) == set(defaults[section]), section


def test_full_preset_listing_is_the_full_preset():
    assert _yaml_block('## The preset "full"') == STUDY_PRESETS["full"]
