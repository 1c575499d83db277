"""coursekit.regression: tolerant comparison of training numbers in stored notebook outputs."""
import nbformat
import pytest

from coursekit import regression
from coursekit.regression import Entry


def _stream(text, name="stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def _display(text):
    return nbformat.v4.new_output("display_data", data={"text/plain": text, "image/png": "AAAA"})


def _cell(outputs, tagged=True, cell_id="c1"):
    cell = nbformat.v4.new_code_cell("train()")
    cell.id = cell_id
    cell.outputs = outputs
    if tagged:
        cell.metadata["tags"] = [regression.TAG]
    return cell


def test_decimals_and_tolerance_floor():
    assert regression.decimals("0.585") == 3 and regression.decimals("12") == 0 and regression.decimals("1e-6") == 0
    assert regression.tolerance_for("0.585", 0.0) == 0.001      # a rounded decimal may flip one unit
    assert regression.tolerance_for("0.585", 0.007) == 0.028    # four times the measured deviation
    assert regression.tolerance_for("981", 0.0) == 0.0          # an integer that never moved stays exact
    assert regression.tolerance_for("981", 3.0) == 12.0


def test_numbers_and_skeleton_leave_names_alone():
    line = "epoch 1/4: loss 2.077, W1 ok, 03_net.pt, 784-500-50-10, [0.26, -0.28]"
    assert [m.group() for m in regression.numbers_by_line(line)[0]] == \
        ["1", "4", "2.077", "784", "500", "50", "10", "0.26", "-0.28"]
    assert regression.skeleton("loss 2.077, val 0.3") == "loss #, val #"


def test_text_slots_pair_outputs_by_kind_and_order():
    outputs = [_stream("a 1\n"), _display("fig 2"), _stream("warn", "stderr"), _display("fig 3")]
    assert regression.text_slots(outputs, str.upper) == {
        "stdout:0": "A 1\n", "text/plain:0": "FIG 2", "stderr:0": "WARN", "text/plain:1": "FIG 3"}


def test_derive_measures_the_largest_deviation_of_every_number_of_tagged_cells():
    stored = [_cell([_stream("epoch 1/2: loss 2.077\nresult: acc = 0.490\n")])]
    runs = {"avx2": [_cell([_stream("epoch 1/2: loss 2.074\nresult: acc = 0.480\n")])],
            "1-thread": [_cell([_stream("epoch 1/2: loss 2.079\nresult: acc = 0.492\n")])]}
    entries, problems = regression.derive(stored, runs)
    assert problems == []
    by_token = {(e.line, e.index): e for e in entries}
    assert (by_token[0, 0].stored, by_token[0, 0].tolerance) == ("1", 0.0)          # epoch number: exact
    assert by_token[0, 2].stored == "2.077" and by_token[0, 2].deviation == pytest.approx(0.003)
    assert by_token[0, 2].tolerance == pytest.approx(0.012)
    assert by_token[1, 0].deviation == pytest.approx(0.010) and by_token[1, 0].tolerance == pytest.approx(0.04)
    assert by_token[1, 0].context == "result: acc = 0.490"


def test_derive_reports_moves_outside_tagged_cells_and_changed_text():
    stored = [_cell([_stream("images: 100\n")], tagged=False), _cell([_stream("cat taken for dog\n")], cell_id="c2")]
    runs = {"avx2": [_cell([_stream("images: 101\n")], tagged=False),
                     _cell([_stream("cat taken for deer\n")], cell_id="c2")]}
    entries, problems = regression.derive(stored, runs)
    assert entries == []
    assert len(problems) == 2
    assert "not tagged 'training-output'" in problems[0] and "100 became 101" in problems[0]
    assert "cat taken for deer" in problems[1]


def _table(*entries):
    return {entry.key: entry for entry in entries}


def test_check_numbers_accepts_within_tolerance_and_restores_the_stored_text():
    table = _table(Entry("c1", "stdout:0", 0, 2, "2.077", 0.003, 0.012, "epoch 1/2: loss 2.077"))
    stored = [_stream("epoch 1/2: loss 2.077\n")]
    fresh = [_stream("epoch 1/2: loss 2.085\n")]
    _, fixed, failures = regression.check_numbers("c1", stored, fresh, table)
    assert failures == [] and fixed[0]["text"] == "epoch 1/2: loss 2.077\n"
    assert fresh[0]["text"] == "epoch 1/2: loss 2.085\n"  # the caller's outputs are not changed


def test_check_numbers_names_a_number_outside_its_tolerance():
    table = _table(Entry("c1", "stdout:0", 1, 0, "0.585", 0.007, 0.028, "result: better_test_accuracy = 0.585"))
    stored = [_stream("done\nresult: better_test_accuracy = 0.585\n")]
    fresh = [_stream("done\nresult: better_test_accuracy = 0.512\n")]
    _, fixed, failures = regression.check_numbers("c1", stored, fresh, table)
    assert fixed[0]["text"].endswith("0.512\n")  # left as it is, so the exact comparison shows it too
    assert len(failures) == 1
    message = failures[0]
    for part in ("result better_test_accuracy", "stored 0.585", "now 0.512", "tolerance ±0.028", "0.007"):
        assert part in message


def test_check_numbers_leaves_unlisted_numbers_and_other_cells_exact():
    table = _table(Entry("c1", "stdout:0", 0, 0, "2.077", 0.003, 0.012, "loss 2.077 of 1000"))
    stored = [_stream("loss 2.077 of 1000\n")]
    _, fixed, failures = regression.check_numbers("c1", stored, [_stream("loss 2.080 of 1001\n")], table)
    assert fixed[0]["text"] == "loss 2.077 of 1001\n" and failures == []     # 1001 still differs exactly
    _, fixed, _ = regression.check_numbers("other", stored, [_stream("loss 2.080 of 1000\n")], table)
    assert fixed[0]["text"] == "loss 2.080 of 1000\n"


def test_check_numbers_ignores_a_stale_entry_and_sanitizes_first():
    table = _table(Entry("c1", "text/plain:0", 0, 1, "9.999", 0.0, 0.001, "stale"))
    stored = [_display("took 3 s, loss 2.077")]
    fresh = [_display("took 5 s, loss 2.078")]
    mask = lambda s: s.replace("3 s", "T").replace("5 s", "T")  # noqa: E731
    ref, fixed, failures = regression.check_numbers("c1", stored, fresh, table, mask)
    assert ref[0]["data"]["text/plain"] == "took T, loss 2.077"
    assert fixed[0]["data"]["text/plain"] == "took T, loss 2.078" and failures == []


def test_name_of_uses_result_names_or_the_words_before_the_number():
    entry = Entry("c9", "stdout:0", 3, 3, "1.783", 0.009, 0.036, "")
    assert regression.name_of(entry, "epoch 1/4: loss 2.077, val_loss 1.783") \
        == "'val_loss' (number 4 of line 4, stdout:0, cell c9)"
    assert regression.name_of(Entry("c", "stdout:0", 0, 0, "1", 0, 0, ""), "result: miou = 0.5") == "result miou"


def test_save_and_load_round_trip(tmp_path):
    entries = [Entry("c1", "stdout:0", 0, 2, "2.077", 0.003, 0.012, "epoch 1/2: loss 2.077")]
    path = regression.save(tmp_path / "tolerances" / "nb.json", entries, {"avx2": {"ATEN_CPU_CAPABILITY": "avx2"}},
                           "nb.ipynb")
    assert regression.load(path) == {entries[0].key: entries[0]}
    assert not list(path.parent.glob("*.tmp"))
    assert regression.load(tmp_path / "missing.json") == {}


def test_table_path_and_sanitizer(tmp_path):
    assert regression.table_path(tmp_path / "03_x.ipynb") == tmp_path / "tolerances" / "03_x.json"
    config = tmp_path / "sanitize.cfg"
    config.write_text("[times]\nregex: \\d+ s\nreplace: SECONDS\n")
    assert regression.sanitizer(config)("took 12 s") == "took SECONDS"


def test_widen_keeps_the_larger_deviation_of_the_same_stored_number():
    def entry(stored, deviation, index=0):
        return regression.Entry("c", "stdout:0", 0, index, stored, deviation,
                                regression.tolerance_for(stored, deviation), "loss")

    earlier = {e.key: e for e in (entry("2.077", 0.01), entry("0.5", 0.2, index=1))}
    widened = regression.widen([entry("2.077", 0.002), entry("0.4", 0.0, index=1)], earlier)
    assert [(e.stored, e.deviation, e.tolerance) for e in widened] == [
        ("2.077", 0.01, pytest.approx(0.04)), ("0.4", 0.0, pytest.approx(0.1))], "another stored value: not widened"
