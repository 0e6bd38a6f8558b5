"""The model catalog's pages: a card per installed version, mode changes, and what did not run."""
