"""The message contract: what the scheduler sends and what a worker accepts."""

from __future__ import annotations

import pytest

from seqsweep.errors import MessageError
from seqsweep.messages import MAX_ID, TrialMessage


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "x",
        {"study_id": "1", "study": "s", "number": 0},
        {"study_id": 1, "study": "s", "number": -1},
        {"study_id": 1, "number": 0},
        {"study_id": True, "study": "s", "number": 0},
        {"study_id": 1, "study": "s", "number": MAX_ID + 1},
        {"study_id": 1, "study": "", "number": 0},
        {"study_id": 1, "study": "s" * 201, "number": 0},
        # Beyond the 32-bit id column (PostgreSQL raised a traceback in the worker log).
        {"study_id": 2**31, "study": "s", "number": 0},
        {"study_id": 2**63 + 1, "study": "s", "number": 0},
        {"study_id": 1, "study": "s", "number": 100_000},
        {"study_id": 1, "study": "s", "number": 2**63 + 1},
        # Characters that would forge lines in the workers log.
        {"study_id": 1, "study": "x\nFORGED succeeded", "number": 0},
        {"study_id": 1, "study": "x\rY", "number": 0},
        {"study_id": 1, "study": "x\x1b[31m", "number": 0},
    ],
)
def test_malformed_payloads_are_rejected(payload: object) -> None:
    with pytest.raises(MessageError, match="payload"):
        TrialMessage.parse(payload)


def test_a_huge_value_is_shown_cut_short() -> None:
    with pytest.raises(MessageError) as caught:
        TrialMessage.parse({"study_id": 1, "study": "x" * 10**6, "number": 0})
    assert len(str(caught.value)) < 200


def test_payload_round_trip() -> None:
    message = TrialMessage(study_id=3, study="s", number=7)
    assert TrialMessage.parse(message.to_payload()) == message
