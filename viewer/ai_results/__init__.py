"""AI results in one shape for the reading room, whoever made them: this platform's (from the database) and
other vendors' SEG and TID 1500 SR (from the archive), with their masks and heatmaps."""
