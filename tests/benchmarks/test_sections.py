"""Every BENCHMARKS.md section is its script's ``markdown(doc)`` of its results file, byte for byte:
a section holds nothing that is not in ``benchmarks/results/<name>.json``."""

import importlib
import json
import re

import pytest

from benchmarks.common import BENCHMARKS_MD, RESULTS

SECTION = re.compile(r"<!-- begin:(\w+) -->\n(.*?)\n<!-- end:\1 -->", re.S)


def sections() -> dict[str, str]:
    return dict(SECTION.findall(BENCHMARKS_MD.read_text()))


def test_every_results_file_has_a_section():
    assert set(sections()) == {path.stem for path in RESULTS.glob("*.json")}


@pytest.mark.parametrize("name", sorted(sections()))
def test_a_section_regenerates_from_its_results_file(name):
    script = importlib.import_module(f"benchmarks.{name}")
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    assert script.markdown(doc).strip() == sections()[name]


def test_deep_compression_tables_add_up_to_the_file():
    """Each per-layer table's bytes column, header and document included, sums to the file's bytes."""
    from benchmarks.deep_compression import layer_table

    doc = json.loads((RESULTS / "deep_compression.json").read_text())
    for m in doc["measurements"].values():
        rows = [line.split("|")[1:-1] for line in layer_table(m["layers"], m["file_bytes"]).splitlines()[2:]]
        parts = [int(cells[5].replace(",", "")) for cells in rows[:-1]]
        assert sum(parts) == m["file_bytes"] == int(rows[-1][5].strip(" *").replace(",", ""))
