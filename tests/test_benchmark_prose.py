"""The benchmark's prose explains; its figures come only from the run (issue: prose that stated
"~4x" beside a table that said 3.30)."""

import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_analysis_appended_to_every_results_file_states_no_figure():
    prose = (BENCH / "ANALYSIS.md").read_text()
    assert re.findall(r"\d", prose) == []


def test_results_carry_the_current_analysis_after_the_table():
    results = (BENCH / "RESULTS.md").read_text()
    assert results.endswith((BENCH / "ANALYSIS.md").read_text())
    assert results.index("| workload | figure |") < results.index("## Reading the results")
