"""The concept files must stay copyable: they import torch and the standard library, nothing else."""

import ast
import os

import pytest

from conftest import ROOT

ALLOWED = {"torch", "__future__", "math", "typing"}


@pytest.mark.parametrize("name", ["grpo.py", "gate.py", "opsd.py"])
def test_concept_file_imports_only_torch(name):
    tree = ast.parse(open(os.path.join(ROOT, name)).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name} uses a relative import"
            imported.add(node.module.split(".")[0])
    assert imported, f"parsed no imports from {name}"
    assert imported <= ALLOWED, f"{name} imports {sorted(imported - ALLOWED)}"


def test_the_objective_copies_out_with_grpo_and_gate_and_runs(tmp_path):
    """A reader copies objective.py, grpo.py and gate.py (and opsd.py) into their own project: they run there
    with torch alone."""
    import shutil
    import subprocess
    import sys

    for name in ("objective.py", "grpo.py", "gate.py", "opsd.py"):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    script = ("import torch\nfrom objective import sdar_objective\n"
              "logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)\n"
              "loss, metrics = sdar_objective(logp, logp.detach(), logp.detach(), logp.detach() + 0.1,\n"
              "                               torch.tensor([1.0]), torch.ones(1, 2))\n"
              "loss.backward()\nprint(round(loss.item(), 6), metrics['sdar/gate_mean'] > 0.5)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "True"


def test_no_core_file_imports_a_tool():
    """tools/ is not on the algorithm's reading path: the top-level files and envs/ never import from it."""
    core = [os.path.join(ROOT, name) for name in os.listdir(ROOT) if name.endswith(".py")]
    core += [os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(ROOT, "envs"))
             for name in names if name.endswith(".py")]
    for path in core:
        for node in ast.walk(ast.parse(open(path).read())):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m == "tools" or m.startswith("tools.") for m in modules), f"{path} imports {modules}"
