"""The admin's pages for people and the trail: user administration and the audit log."""
