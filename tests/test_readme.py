"""The README's commands are the ones CI runs, and every command of README.md and docs/ runs as written.

Each page's commands run in order, through bash (``python`` is this environment's), in a fresh folder
that a later command shares, so it reads what an earlier one built (``card exports/...``); a sweep
(``-m``) starts a fresh folder of its own (it builds what the commands after it read), so that the
suite's workers share a page's sweeps out. A command
that needs what only a user has (a model folder, a package of their own, a data file, a cluster, a
branch) says so in its comment, ``(needs: ...)``: it is checked for syntax only (its overrides as
Hydra reads them, its subcommand's options). No command writes ``~`` for a home folder: the shell
would pass it to Hydra unexpanded there (``model.path=~/x``), and Hydra reads a leading ``~`` as
"delete this key".
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def test_ci_runs_the_readme_test_command():
    # The line that makes .venv and runs the suite (a later step makes a second environment of its own).
    ci_lines = [line for line in (REPO / ".ci/run").read_text().splitlines() if line.startswith("python3 -m venv .venv ")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in (REPO / "README.md").read_text()


def test_readme_has_the_main_job_command():
    assert "python -m exporter\n" in (REPO / "README.md").read_text()


PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
# What each subcommand takes besides its folders (checked for the commands that need what a user has).
SUBCOMMAND_OPTIONS = {"card": {"-o"}, "diff": {"--format"}, "verify": {"--code"}}
# Exit status that is the command's answer, not a failure: diff says 1 when the two differ.
ANSWERS = {"diff": {0, 1}}
# What a command says it does, checked after it ran (in its folder): the README's sweep, six folders
# named by their choices and one summary.
SAYS = {
    "python -m exporter -m format=onnx,torchscript,pytorch quantization=none,dynamic": lambda folder, out: (
        sorted(p.parent.name for p in (folder / "exports" / "simple_cnn").glob("*/metadata.json")) == [
            "onnx-dynamic", "onnx-none", "pytorch-dynamic", "pytorch-none", "torchscript-dynamic", "torchscript-none"]
        and "sweep: 6 job(s), 6 ok, 0 failed" in out),
}


def commands(page: str) -> list[tuple[str, str]]:
    """(command, what it needs or "") of each `python -m exporter` line of the page's bash blocks,
    continuation lines joined, in order."""
    text = (REPO / page).read_text()
    found = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "python -m exporter" not in line or ".venv/bin/pip install" in line:
                continue  # the install lines: CI runs them (tests/test_readme.py)
            command, _, comment = line.partition(" #")
            needs = re.search(r"\(needs: ([^)]*)\)", comment)
            found.append((command.strip(), needs.group(1) if needs else ""))
    return found


def test_the_pages_have_commands_and_none_writes_a_tilde_for_home():
    every = [c for page in PAGES for c, _ in commands(page)]
    assert set(SAYS) <= set(every), set(SAYS) - set(every)
    assert len(every) >= 40, len(every)
    assert not [c for c in every if re.search(r"(^|[\s=])~/", c)], [c for c in every if "~/" in c]


def _syntax(command: str) -> None:
    """The command's arguments as the tool reads them: a subcommand's options, or Hydra's overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    words = shlex.split(command.split(" && ")[-1].split(" > ")[0])
    args = words[words.index("exporter") + 1:]
    if args and args[0] in SUBCOMMAND_OPTIONS:
        options = {a for a in args[1:] if a.startswith("-")}
        assert options <= SUBCOMMAND_OPTIONS[args[0]], (command, options)
        return
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--config-dir", "-cd", "--cfg", "-c"):
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg.replace("$HOME", "/home/user"))
    OverridesParser.create().parse_overrides(overrides)  # raises on what Hydra cannot read


def groups(page: str) -> list[list[tuple[str, str]]]:
    """The page's commands, a new group (folder) at each sweep."""
    found: list[list[tuple[str, str]]] = []
    for command, needs in commands(page):
        if not found or (" -m " in f"{command.split('python -m exporter', 1)[1]} " and not needs):
            found.append([])
        found[-1].append((command, needs))
    return found


@pytest.mark.slow  # every command of the docs, sweeps included: run in CI
@pytest.mark.parametrize("page, group", [(p, i) for p in PAGES for i in range(len(groups(p)))])
def test_every_command_of_the_page_runs_as_written(tmp_path, page, group):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ran = 0
    for command, needs in groups(page)[group]:
        if needs:
            _syntax(command)
            continue
        r = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        subcommand = shlex.split(command)[3] if len(shlex.split(command)) > 3 else ""
        assert r.returncode in ANSWERS.get(subcommand, {0}), (page, command, r.stdout[-1500:], r.stderr[-1500:])
        assert "Traceback" not in r.stderr, (page, command, r.stderr[-3000:])
        assert SAYS.get(command, lambda *_: True)(tmp_path, r.stdout), (page, command, r.stdout[-3000:])
        ran += 1
    assert ran or all(needs for _, needs in groups(page)[group]), page
