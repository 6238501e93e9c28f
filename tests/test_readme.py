"""Every ```python block of the README runs as written (with the shipped checkpoint)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 2


CONTINUES = "# continues the block above"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index):
    """A block runs alone, or after the blocks it continues (it starts with CONTINUES)."""
    first = index
    while first > 0 and BLOCKS[first].startswith(CONTINUES):
        first -= 1
    namespace: dict = {}
    for i in range(first, index + 1):
        exec(compile(BLOCKS[i], f"README.md python block {i}", "exec"), namespace)


SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
COMMANDS = [
    line.split("#")[0].strip()
    for block in SHELL_BLOCKS
    for line in block.splitlines()
    if line.strip().startswith("curvepfn ")
]


def test_readme_has_shell_commands():
    assert len(COMMANDS) >= 8


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_line_parses(command):
    """Every `curvepfn ...` line of the README is a valid command line of the current CLI (the
    long-running ones are not run here; `curvepfn demo`, `predict` and `evaluate` are tested in
    tests/bo and tests/pfn)."""
    import shlex

    from bo.cli import build_parser

    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


def test_readme_make_targets_exist():
    makefile = (README.parent / "Makefile").read_text()
    lines = [m for block in SHELL_BLOCKS for m in re.findall(r"^make \S+", block, re.M)]
    targets = {line.split()[1] for line in lines}
    assert targets and all(re.search(rf"^{t}:", makefile, re.M) for t in targets)


FAST = ("curvepfn predict ", "curvepfn prior plot ")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith(FAST)])
def test_readme_fast_commands_run(command, tmp_path, monkeypatch):
    """The README's quick commands run as written (from the repository root; outputs go to a
    temporary folder)."""
    import shlex

    from bo.cli import main

    args = shlex.split(command)[1:]
    args = [str(README.parent / a) if a.startswith("examples/") else a for a in args]
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    written = [p for p in tmp_path.iterdir() if p.suffix == ".png"]
    assert written and all(p.stat().st_size > 1000 for p in written)


# The README's long commands, cut short by the flags that bound their work (a later flag wins in
# argparse): everything else on the line runs as written.
BOUNDS = {
    "curvepfn pretrain ": ["--stop-at", "2"],
    "curvepfn evaluate surrogate ": ["--seeds", "1", "--context-sizes", "400"],
    "curvepfn evaluate prior ": ["--tasks", "16"],
    "curvepfn evaluate hpo ": ["--seeds", "1", "--budget", "30"],
}
SHARED = README.parents[1] / "shared"


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.startswith(FAST)])
def test_readme_long_commands_run(command, tmp_path_factory, monkeypatch):
    """Every other `curvepfn ...` line runs too, in order, in one scratch folder (so `prior
    sample` writes the `prior.h5` that `pretrain --data prior.h5` reads); long ones are bounded
    by BOUNDS. `make test-slow` runs this."""
    import shlex

    import torch

    from bo.cli import main

    args = shlex.split(command)[1:]
    if "--devices" in args and torch.cuda.device_count() < int(args[args.index("--devices") + 1]):
        pytest.skip(f"needs {args[args.index('--devices') + 1]} GPUs: {command}")
    if any(a.startswith("../shared/") for a in args) and not SHARED.is_dir():
        pytest.skip("../shared/data is not here (a user's clone)")
    args = [
        str(README.parent / a) if a.startswith(("examples/", "checkpoints/"))
        else str(SHARED.parent / a[3:]) if a.startswith("../shared/")
        else a
        for a in args
    ]  # fmt: skip
    if "--time-budget" in args:  # its own bound (it refuses --stop-at); a CPU-sized batch
        args += ["--batch-size", "2", "--time-budget", "30s"]
    else:
        args += next((extra for prefix, extra in BOUNDS.items() if command.startswith(prefix)), [])
    monkeypatch.chdir(tmp_path_factory.getbasetemp())  # shared by the commands of one session
    assert main(args) == 0
