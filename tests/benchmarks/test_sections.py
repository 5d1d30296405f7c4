"""Every BENCHMARKS.md section is its script's ``markdown(doc)`` of its results file, byte for byte:
a section holds nothing that is not in ``benchmarks/results/<name>.json``."""

import importlib
import json
import re

import pytest

from benchmarks.common import BENCHMARKS_MD, RESULTS

# A section whose script is not benchmarks/<section>.py: the studies live in benchmarks/studies/.
OWNER: dict[str, str] = {"distillation_ceiling": "studies.distillation_ceiling",
                         "distillation_mlp": "studies.distillation_mlp"}
SECTION = re.compile(r"<!-- begin:(\w+) -->\n(.*?)\n<!-- end:\1 -->", re.S)


def sections() -> dict[str, str]:
    return dict(SECTION.findall(BENCHMARKS_MD.read_text()))


def test_every_results_file_has_a_section():
    assert set(sections()) == {path.stem for path in RESULTS.glob("*.json")}


@pytest.mark.parametrize("name", sorted(sections()))
def test_a_section_regenerates_from_its_results_file(name):
    script = importlib.import_module(f"benchmarks.{OWNER.get(name, name)}")
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    assert script.markdown(doc).strip() == sections()[name]
