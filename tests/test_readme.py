"""The README's commands are the ones CI runs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    # The line that makes .venv and runs the suite (a later step makes a second environment of its own).
    ci_lines = [line for line in (REPO / ".ci/run").read_text().splitlines() if line.startswith("python3 -m venv .venv ")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in (REPO / "README.md").read_text()


def test_readme_has_the_main_job_command():
    assert "python -m exporter\n" in (REPO / "README.md").read_text()
