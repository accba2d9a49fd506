"""The bad-input catalogue across the whole public API: every misuse fails with a clear error."""
import pytest

from flashcore.bad_inputs import judge
from integration.bad_inputs import run_all_bad_input_checks

from conftest import DEVICE


def test_every_misuse_of_the_public_api_is_clear():
    rows = run_all_bad_input_checks(DEVICE)
    cases = [row["case"] for row in rows]
    assert len(set(cases)) == len(cases), "case names must be distinct"
    assert len(rows) >= 25
    unclear = [row for row in rows if not row["clear"]]
    assert not unclear, unclear


def _raise(exc):
    raise exc


@pytest.mark.parametrize("call, word, clear", [
    (lambda: _raise(ValueError("key has sequence length 0")), "length 0", True),
    (lambda: _raise(RuntimeError("query requires grad")), "requires grad", True),
    (lambda: None, "anything", False),                                    # no error at all
    (lambda: _raise(ValueError("something is wrong")), "kv_lens", False),  # an error that does not name it
    (lambda: _raise(IndexError("kv_lens out of range")), "kv_lens", False),  # not a clear error type
])
def test_judge_can_fail(call, word, clear):
    (row,) = judge([("case", call, word)])
    assert row["clear"] is clear, row
