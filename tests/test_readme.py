"""Every command the README tells a newcomer to run exists as written: each ``python -m MODULE`` names an
importable module with a command-line entry point, each script path is a file, and each ``openaim ...``
command line parses (the benches were once renamed and the README kept the old ``python bench/proxy.py``)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openaim.cli import app
from openaim.settings import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
MODULES = sorted(set(re.findall(r"python -m ([\w.]+)", README)))
SCRIPTS = sorted(set(re.findall(r"python (?!-m)([\w/]+\.py)", README)))
OPENAIM_LINES = sorted(
    {line.split("#")[0].strip() for line in re.findall(r"^(?:\$ )?(openaim [^\n`]+)", README, re.MULTILINE)}
)


def test_the_readme_names_commands_at_all() -> None:
    assert MODULES and OPENAIM_LINES  # the patterns below still find what they check


@pytest.mark.parametrize("module", MODULES)
def test_each_python_module_it_names_can_run(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"README runs `python -m {module}`: no such module"
    source = Path(spec.origin).read_text()
    assert '__name__ == "__main__"' in source or spec.origin.endswith("__main__.py"), module


def test_each_script_path_it_names_is_a_file() -> None:
    missing = [script for script in SCRIPTS if not (REPO_ROOT / script).is_file()]
    assert not missing, f"README runs these with `python PATH`, and they are not there: {missing}"


@pytest.mark.parametrize("line", OPENAIM_LINES)
def test_each_openaim_command_line_it_shows_parses(line: str) -> None:
    words = [word for word in shlex.split(line)[1:] if not re.fullmatch(r"\[.*|.*\]|[A-Z_]+|\{.*\}", word)]
    commands = [word for word in words if not word.startswith("-")][:2]
    result = CliRunner().invoke(app, [*commands, "--help"])
    assert result.exit_code == 0, f"`{line}`: {result.output}"
