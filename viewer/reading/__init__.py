"""The reading room: the worklist and each study's status, the study page, the images and frames the canvas
viewport draws (through the browser-facing DICOMweb proxy), pictures, and a reader's impressions and blinded
read."""
