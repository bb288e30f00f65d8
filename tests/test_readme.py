"""The README is the front door: its layout names every module, and CI runs its test command."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_layout_names_every_module():
    layout = README.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"[\w/]+\.(?:py|json)", layout))
    for path in sorted((REPO / "cyclegan").rglob("*")):
        if path.suffix not in (".py", ".json") or "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        relative = path.relative_to(REPO / "cyclegan").as_posix()
        if relative.startswith("bench/"):  # one line describes the package and names its files
            assert path.name in layout, relative
        else:
            assert relative in named or path.name in named, f"README layout misses cyclegan/{relative}"


def test_ci_runs_the_readme_test_command():
    """CI installs as the README says and runs its test command as written, on its own line."""
    command = 'pip install -e ".[test]" && python -m pytest -q tests'
    assert f"\n{command}  #" in README  # the two commands' block: command, then its comment
    ci = (REPO / ".ci" / "run").read_text()
    assert f"\n{command}\n" in ci and "\npython -m pip install --quiet torch torchvision\n" in ci
    job1 = ci.split("== job 1")[1].split("== job 2")[0]
    assert " -c " not in job1 and "--constraint" not in job1  # job 1 installs what users get
