"""The notebook regression check catches real regressions: mutations of a temporary copy must fail it.

Each test copies the package and the notebooks to a temporary folder, breaks one thing there, runs nbval
with the tolerance plugin on one notebook (stopping at the first failing cell) and checks that it fails
with a message naming the number, its stored and new values and the tolerance.
"""
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from coursekit.config import REPO_ROOT

# The stored outputs are a run under the versions of constraints.txt; `make test-floor` skips these.
pytestmark = pytest.mark.pinned
MESSAGE = re.compile(r"stored -?[\d.]+, now -?[\d.]+, tolerance ±[\d.e-]+")


def _copy(tmp_path):
    root = tmp_path / "kit"
    shutil.copytree(REPO_ROOT / "coursekit", root / "coursekit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


def _replace(path, old, new, count=1):
    text = path.read_text()
    assert text.count(old) >= count, f"mutation target {old!r} not found in {path}"
    path.write_text(text.replace(old, new, count))


def _nbval(root, notebook):
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    env.update(PYTHONPATH=str(root), COURSEKIT_PROFILE="ci")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "coursekit.nbval_tolerance",
               "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(root / "notebooks" / "sanitize.cfg"),
               "-x", "-q", "--rootdir", str(root), str(root / "notebooks" / notebook)]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1200)


def _assert_caught(result, expected_name):
    output = result.stdout + result.stderr
    assert result.returncode != 0, "the mutated notebook passed nbval: the check did not catch the regression"
    assert "training numbers outside their tolerance" in output, output[-3000:]
    lines = [line for line in output.splitlines() if MESSAGE.search(line)]
    assert lines, output[-3000:]
    assert any(expected_name in line for line in lines), "\n".join(lines)


def test_the_copy_itself_passes(mirror, tmp_path):
    """Unchanged, the copy passes the cells the mutations below change (so their failures are theirs)."""
    root = _copy(tmp_path)
    path = root / "notebooks" / "03_cifar_classifier.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = notebook.cells[:17]  # up to and including the training of Net
    nbformat.write(notebook, path)
    result = _nbval(root, path.name)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_a_ten_times_smaller_learning_rate_is_caught(mirror, tmp_path):
    root = _copy(tmp_path)
    _replace(root / "coursekit" / "profiles.py", '"net_lr": 0.01', '"net_lr": 0.001')  # the ci profile's entry
    _assert_caught(_nbval(root, "03_cifar_classifier.ipynb"), "val_accuracy")


def test_broken_cifar_augmentation_is_caught(mirror, tmp_path):
    root = _copy(tmp_path)
    # the gather index forgets the padding in the row stride: every augmented image is scrambled
    _replace(root / "coursekit" / "data" / "cifar.py", "(rows * (w + 2 * PAD) + cols)", "(rows * w + cols)")
    _assert_caught(_nbval(root, "03_cifar_classifier.ipynb"), "loss")


def test_fcn8s_without_skip_connections_is_caught(mirror, tmp_path):
    root = _copy(tmp_path)
    path = root / "notebooks" / "04_fcn.ipynb"
    notebook = nbformat.read(path, as_version=4)
    (cell,) = [c for c in notebook.cells if c.cell_type == "code" and "class MyFCN8s" in c.source]
    assert "upscore2 + score_pool4" in cell.source and "upscore_pool4 + score_pool3" in cell.source
    cell.source = (cell.source.replace("upscore2 + score_pool4", "upscore2")
                   .replace("upscore_pool4 + score_pool3", "upscore_pool4"))
    # The check cell would stop the run at once (tests/test_checks_segmentation.py shows it does); without it,
    # the stored training numbers must catch the regression on their own.
    (check,) = [c for c in notebook.cells if c.cell_type == "code" and "checks.check_fcn8s(MyFCN8s)" in c.source]
    notebook.cells.remove(check)
    nbformat.write(notebook, path)
    _assert_caught(_nbval(root, "04_fcn.ipynb"), "loss")
