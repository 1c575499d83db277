import pytest

from coursekit import results


def test_record_prints_one_line_and_returns_value(capsys):
    assert results.record("test_accuracy", 0.973456) == 0.973456
    assert capsys.readouterr().out == "result: test_accuracy = 0.9735\n"
    assert results.recorded()["test_accuracy"] == 0.973456


def test_record_integers_and_text_unchanged(capsys):
    results.record("epochs", 12)
    results.record("model", "FCN8s")
    assert capsys.readouterr().out.splitlines() == ["result: epochs = 12", "result: model = FCN8s"]


def test_format_value_digits():
    assert results.format_value(1 / 3, digits=2) == "0.33"
    assert results.format_value(True) == "True"


def test_record_rejects_names_with_spaces():
    with pytest.raises(ValueError, match="underscores"):
        results.record("test accuracy", 1.0)


def test_parse_reads_back_what_record_prints(capsys):
    results.record("miou", 0.51234)
    results.record("passed", True)
    printed = "epoch 1/2\n" + capsys.readouterr().out + "result: miou = 0.6000\nresult:not one\n"
    assert results.parse(printed) == {"miou": "0.6000", "passed": "True"}
