"""How the platform reaches Orthanc: its base URL and credentials."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class OrthancConnection:
    url: str
    username: str
    password: str

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url.rstrip('/')}/dicom-web"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(self.username, self.password), timeout=timeout)

    def __repr__(self) -> str:  # never print the password
        return f"OrthancConnection(url={self.url!r}, username={self.username!r})"
