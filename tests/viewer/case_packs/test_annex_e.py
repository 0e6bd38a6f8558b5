"""The Annex E table is data beside the code: a bad edit of the data file (a row lost, an action mistyped,
a keyword that pydicom does not know, another edition) fails here rather than leaking an identifier."""

from __future__ import annotations

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from viewer.case_packs import annex_e


def test_the_table_is_the_2026c_edition_and_says_so_with_its_source() -> None:
    assert annex_e.EDITION == "2026c"
    assert annex_e.TABLE.name == "annex_e_2026c.csv"
    header = [line for line in annex_e.TABLE.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert "Table E.1-1, edition 2026c" in header[0]
    assert any("KitwareMedical/dicom-anonymizer" in line for line in header)


def test_every_row_has_one_known_action_and_counts_per_action_hold() -> None:
    rows = annex_e._rows()
    assert {row["action"] for row in rows} == {"remove", "empty", "replace"}
    assert len(rows) == 425
    assert len(annex_e.REMOVE) == 307
    assert len(annex_e.EMPTY) == 53
    assert len(annex_e.REPLACE) == 40
    assert len(annex_e.UNNAMED_REMOVE) == 25
    assert not annex_e.REMOVE & annex_e.EMPTY
    assert not annex_e.REMOVE & annex_e.REPLACE
    assert not annex_e.EMPTY & annex_e.REPLACE


def test_known_rows_carry_the_actions_the_pack_relies_on() -> None:
    assert {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName"} <= (
        annex_e.EMPTY
    )
    assert {"StudyDescription", "SeriesDescription", "ProtocolName", "PatientAddress", "ImageComments"} <= (
        annex_e.REMOVE
    )
    assert {"ClinicalTrialSubjectID", "DeviceLabel", "VerifyingOrganization"} <= annex_e.REPLACE
    assert 0x00100011 in annex_e.UNNAMED_REMOVE  # Person Names to Use Sequence
    assert 0x0040E012 in annex_e.UNNAMED_REMOVE  # Display URI


def test_tags_keywords_and_names_agree_with_pydicom() -> None:
    for row in annex_e._rows():
        tag = annex_e._tag(row["tag"])
        assert row["tag"] == f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if row["keyword"]:
            assert tag_for_keyword(row["keyword"]) == tag, row
        else:
            assert row["action"] == "remove" and keyword_for_tag(tag) == "", row
        assert row["name"], row
