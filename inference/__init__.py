"""Inference: model packages (``manifest``, ``package``) and their ``catalog``; the service that watches
Orthanc (``watcher``), routes series to models (``router``), runs durable ``jobs`` (``service``, ``runtime``)
and writes ``results`` to the database and as DICOM (``dicom_results``)."""
