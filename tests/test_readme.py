"""The README says what the code does: its API table is the one script_args.py makes."""

from pathlib import Path

from lib_speedkit.script_args import api_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_api_table_is_made_from_the_script_args():
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- api-table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /api-table -->")
    assert text[start:end].strip() == api_table_markdown()


def test_the_readme_gives_the_test_command_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python3 dev.py test" in ci and "python3 dev.py test" in README.read_text(encoding="utf-8")
