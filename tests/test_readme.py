"""The README's results section says what the published results files say: it is the section that
integration.readme_results generates from report/results/*.json, unedited."""
from integration.readme_results import BEGIN, END, ROOT, readme_with_results


def test_readme_results_section_is_the_published_results():
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README.md lost its generated results section markers"
    assert readme == readme_with_results(readme), \
        "README.md's results section differs from report/results: run python -m integration.readme_results"
