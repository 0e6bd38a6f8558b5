"""The demo package's device UID: a valid DICOM UID that changes with the weights."""

from __future__ import annotations

from inference.training.demo_cxr_package import device_uid
from openaim.uids import is_uid


def test_the_device_uid_is_a_dicom_uid_that_follows_the_weights() -> None:
    first, second = device_uid("f" * 64), device_uid("0123" * 16)
    assert is_uid(first) and is_uid(second) and first != second
