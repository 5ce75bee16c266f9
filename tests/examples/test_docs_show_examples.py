"""docs/testing.md shows the example test file and the CI job as they are in the repository."""

from support.paths import ROOT_DIR


def test_testing_page_shows_the_examples_verbatim() -> None:
    page = (ROOT_DIR / "docs" / "testing.md").read_text()
    example = (ROOT_DIR / "tests" / "examples" / "test_plugin_example.py").read_text()
    workflow = (ROOT_DIR / "docs" / "examples" / "replay-gate.yml").read_text()
    assert f"```python\n{example}```" in page
    assert f"```yaml\n{workflow}```" in page
