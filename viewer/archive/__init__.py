"""The platform's way into Orthanc: the DICOMweb client the pages use, STOW-RS upload parsing, UIDs as they
may appear in a URL, and DICOM values as text for people."""
