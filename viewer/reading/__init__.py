"""The reading room: worklist and study status, the study page, the images and frames the canvas viewport
draws (through the browser-facing DICOMweb proxy), thumbnails, a reader's impressions and blinded read."""
