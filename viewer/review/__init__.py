"""Discrepancy review: the queue of disagreements, meetings that step through them anonymised, the consensus
recorded, and the minutes."""
