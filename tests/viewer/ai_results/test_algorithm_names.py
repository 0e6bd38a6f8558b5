"""A repository address where a DICOM object names its algorithm, read into a name, a version and a link."""

from __future__ import annotations

import pytest

from viewer.ai_results.algorithm_names import is_address, link, pinned_version, repository_name


@pytest.mark.parametrize(
    ("address", "name", "version"),
    [
        ("https://github.com/QIICR/dcmqi.git", "dcmqi", ""),
        ("https://github.com/ImagingDataCommons/highdicom", "highdicom", ""),
        ("https://github.com/ImagingDataCommons/highdicom/", "highdicom", ""),
        ("git@github.com:QIICR/dcmqi.git", "dcmqi", ""),
        ("https://github.com/QIICR/dcmqi.git@v1.2.5", "dcmqi", "v1.2.5"),
        ("git+https://gitlab.example.org/ai/lung-cad.git@2.0", "lung-cad", "2.0"),
    ],
)
def test_an_address_reads_as_its_repository_name_and_pinned_version(
    address: str, name: str, version: str
) -> None:
    assert is_address(address)
    assert (repository_name(address), pinned_version(address)) == (name, version)


@pytest.mark.parametrize("text", ["LungCAD", "2.1 build 7", "v1.0", "see https://x.org", ""])
def test_plain_names_are_not_addresses(text: str) -> None:
    assert not is_address(text)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("https://github.com/QIICR/dcmqi.git", "https://github.com/QIICR/dcmqi.git"),
        ("http://example.org/ai/tool", "http://example.org/ai/tool"),
        ("https://github.com/QIICR/dcmqi.git@v1.2.5", "https://github.com/QIICR/dcmqi.git"),
        ("javascript://alert(1)", None),
        ("file:///etc/passwd", None),
        ("git@github.com:QIICR/dcmqi.git", None),
        ("ssh://git@github.com/QIICR/dcmqi.git", None),
        ('https://x.org/"onmouseover="alert(1)', None),
        ("https:///no-host", None),
    ],
)
def test_only_http_addresses_with_a_host_become_links(address: str, expected: str | None) -> None:
    assert link(address) == expected
