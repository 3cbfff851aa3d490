"""The short fuzz run: every reader and parser gets 150 generated malformed inputs and may only refuse them with a
toolkit error (`benchmarks/fuzz_all.py` runs 10k per target)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datasets_build.errors import DataError
from datasets_build.safe_pickle import safe_loads
from tests.reliability.fuzz_targets import TARGETS, Fixtures, fixtures_in, fuzz

CASES = 150


@pytest.fixture(scope="module")
def fx() -> Iterator[Fixtures]:
    with fixtures_in() as fixtures:
        yield fixtures


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_no_escapes(fx: Fixtures, target) -> None:
    report = fuzz(target, fx, CASES, seed_value=0)
    escapes = {sig: (count, example) for sig, (count, example, _) in report.escapes.items()}
    assert not escapes, f"{target.name}: {escapes}"
    assert report.cases == CASES
    # the cases reach the readers' accepting paths too, not only their first check
    assert report.refused < report.cases or target.name in {"npz", "npy-pickle"}


def test_harness_counts_escapes_and_refusals(fx: Fixtures) -> None:
    """A reader that raises a bare exception on some cases is reported, with the place and an example."""
    from dataclasses import replace

    def run(_: Fixtures, case: bytes) -> None:
        if len(case) % 5 == 3:
            raise KeyError("boom")
        safe_loads(case, "case")

    target = replace(TARGETS[0], name="probe", strategy=lambda _: __import__("hypothesis").strategies.binary(), run=run)
    report = fuzz(target, fx, 300, seed_value=1)
    assert report.cases == 300
    assert report.escaped >= 1
    assert all(sig.startswith("KeyError at tests/reliability/test_fuzz.py") for sig in report.escapes), report.escapes
    assert report.refused >= 1  # junk bytes are refused by the restricted unpickler as DataError


def test_forbidden_pickle_globals_are_refused_before_any_call(tmp_path) -> None:
    marker = tmp_path / "ran"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(DataError, match=r"refusing to load os\.system"):
        safe_loads(payload, "evil.npy")
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\nbytes\n(I1000000000\ntR.",
        b"cbuiltins\nlist\n(cbuiltins\nrange\n(I1000000000\ntRtR.",
        b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1000000000\ntcnumpy\ndtype\n(S'O8'\nI0\nI1\ntRtR.",
        b"cnumpy\nndarray\n((I1000000000\ntS'O'\ntR.",
    ],
    ids=["bytes", "list-of-range", "reconstruct", "ndarray"],
)
def test_allocation_bombs_are_refused_before_allocating(payload: bytes) -> None:
    with pytest.raises(DataError, match=r"refusing|more elements than the pickle has bytes"):
        safe_loads(payload, "bomb.npy")
