"""The second reader's loop: the AI panel where a reader gives an impression and agree/disagree per finding,
the feedback rows and their API, the feedback as a DICOM SR in the archive, and "My feedback"."""
