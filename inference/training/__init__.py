"""Training scripts for the platform's own demonstration models (``demo_cxr``: the chest X-ray demo,
its pieces in ``demo_cxr_*``)."""
