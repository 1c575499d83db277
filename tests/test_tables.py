import pytest

from coursekit.tables import format_table


def test_columns_are_aligned_under_a_rule_and_numbers_to_the_right():
    text = format_table(("name", "points", "note"), [("alice", "3", "ok"), ("bob", "12", "")], right=(1,))
    assert text.splitlines() == ["name   points  note",
                                 "-----  ------  ----",
                                 "alice       3  ok",
                                 "bob        12"]


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="a row has 1 cells, the header 2"):
        format_table(("a", "b"), [("x",)])
