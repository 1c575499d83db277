import pytest
import torch

from coursekit.checks import report


def test_fail_message_has_expected_got_and_hint():
    with pytest.raises(report.CheckFailed) as info:
        report.fail("wrong thing", 1, 2, "do this")
    assert str(info.value) == "wrong thing\n  expected: 1\n  got:      2\n  hint: do this"
    assert isinstance(info.value, AssertionError)


def test_expect_passes_and_fails():
    report.expect(True, "x", 1, 1, "h")
    with pytest.raises(report.CheckFailed, match="x"):
        report.expect(False, "x", 1, 2, "h")


def test_expect_close_reports_shape_and_worst_value():
    report.expect_close("a", [1.0, 2.0], torch.tensor([1.0, 2.0]), "h")
    with pytest.raises(report.CheckFailed, match="wrong shape"):
        report.expect_close("a", [1.0, 2.0], [1.0], "h")
    with pytest.raises(report.CheckFailed, match=r"index \(1,\)"):
        report.expect_close("a", [1.0, 2.0], [1.0, 3.0], "h")


def test_expect_number_accepts_numbers_and_scalar_tensors():
    assert report.expect_number("n", 0.5, "a float", "h") == 0.5
    assert report.expect_number("n", torch.tensor(0.25), "a float", "h") == 0.25
    for bad in ("0.5", None, True, torch.ones(2)):
        with pytest.raises(report.CheckFailed, match="n"):
            report.expect_number("n", bad, "a float", "h")


def test_passed_prints_one_line(capsys):
    report.passed("thing")
    assert capsys.readouterr().out == "check passed: thing\n"


def test_run_student_turns_stub_into_clear_failure():
    def stub():
        raise NotImplementedError

    with pytest.raises(report.CheckFailed, match="not implemented"):
        report.run_student("my function", stub)
    assert report.run_student("ok", lambda x: x + 1, 1) == 2


def test_call_student_names_an_error_and_keeps_the_stub_message():
    def broken(x):
        raise KeyError("w")

    def stub(x):
        raise NotImplementedError

    assert report.call_student("double(2)", lambda x: 2 * x, 2, hint="h") == 4
    with pytest.raises(report.CheckFailed, match=r"double\(2\) raised KeyError: 'w'[\s\S]*hint: look at the keys"):
        report.call_student("double(2)", broken, 2, hint="look at the keys")
    with pytest.raises(report.CheckFailed, match="not implemented"):
        report.call_student("double(2)", stub, 2, hint="h")


def test_keeps_random_state_leaves_the_callers_stream_alone():
    @report.keeps_random_state
    def draws():
        """Draws."""
        return torch.rand(3)

    torch.manual_seed(0)
    first = draws()
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1)) and first.shape == (3,) and draws.__doc__ == "Draws."
