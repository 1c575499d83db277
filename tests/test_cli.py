import nbformat
import pytest

from coursekit import cli, notebooks


def test_parser_knows_the_commands():
    parser = cli.build_parser()
    assert parser.parse_args(["data", "--no-download"]).no_download
    args = parser.parse_args(["execute", "a.ipynb", "--profile", "cpu"])
    assert args.notebooks == ["a.ipynb"] and args.profile == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["execute", "a.ipynb", "--profile", "gpu"])
    assert parser.parse_args(["tolerances", "a.ipynb", "b.ipynb"]).notebooks == ["a.ipynb", "b.ipynb"]


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.environ['COURSEKIT_PROFILE'])")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_execute_stores_outputs_of_the_requested_profile(tmp_path, capsys):
    path = tmp_path / "tiny.ipynb"
    _notebook(path)
    assert cli.main(["execute", str(path), "--profile", "ci"]) == 0
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.outputs[0]["text"] == "ci\n" and cell.execution_count == 1
    assert "executed" in capsys.readouterr().out


def test_execute_rejects_unknown_profile(tmp_path):
    path = tmp_path / "tiny.ipynb"
    _notebook(path)
    with pytest.raises(ValueError, match="profile"):
        notebooks.execute(path, profile="gpu")


def test_failed_execution_leaves_the_notebook_untouched(tmp_path):
    path = tmp_path / "broken.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    before = path.read_text()
    with pytest.raises(Exception, match="boom"):
        notebooks.execute(path)
    assert path.read_text() == before
