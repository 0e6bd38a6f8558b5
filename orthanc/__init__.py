"""Orthanc, the archive: its configuration, a launcher for a child-process Orthanc, the connection, the
one adapter to its REST API (``rest``), the archive demo seeding fills (``seeding``)."""

from orthanc.connection import OrthancConnection
from orthanc.launcher import OrthancNotInstalledError, OrthancServer

__all__ = ["OrthancConnection", "OrthancNotInstalledError", "OrthancServer"]
