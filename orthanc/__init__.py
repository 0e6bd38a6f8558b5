"""Orthanc, the archive: its configuration, a launcher for a child-process Orthanc, and the connection."""

from orthanc.connection import OrthancConnection
from orthanc.launcher import OrthancNotInstalledError, OrthancServer

__all__ = ["OrthancConnection", "OrthancNotInstalledError", "OrthancServer"]
