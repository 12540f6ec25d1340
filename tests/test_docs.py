"""Words in the code and docs that had gone stale (issue 18)."""

import typer.main

from pipeline.cli import app


def test_stale_words_are_gone():
    """Issue 18: runs --help said "best validation accuracy first" (it sorts by the estimate); submit.py called
    itself stage 6; config.py said every default lives in PRESETS; model.py quoted 99.69 % as the measure."""
    import pipeline.competition.submit
    import pipeline.core.config
    import pipeline.training.model

    runs_help = typer.main.get_command(app).commands["runs"].help
    assert "estimated accuracy first" in runs_help and "validation" not in runs_help
    assert "Stage 6" not in pipeline.competition.submit.__doc__
    assert "only place defaults live" not in pipeline.core.config.__doc__
    assert "99.60 % +- 0.07" in pipeline.training.model.__doc__ and "99.60-99.69" not in pipeline.training.model.__doc__


def test_readme_is_a_guide_of_about_20000_characters_that_points_to_the_docs():
    from conftest import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme) <= 20_000, len(readme)
    assert "make test" in readme.splitlines() and "about 7 minutes" not in readme
    for document in ("docs/experiments.md", "docs/architecture.md"):
        assert document in readme and (PROJECT_ROOT / document).is_file()
