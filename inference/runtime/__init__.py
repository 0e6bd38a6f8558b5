"""Running a model package: DICOM pixels to tensors (``pixels``, ``transform``), the module (``loader``),
batched prediction with heatmaps and boxes (``predictor``, ``cam``)."""
