"""The UIDs of a job's SR and SEG, derived from (source series, device UID): a re-run stores the same
instances, and the watcher can tell our own result series from new ones without reading them."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid


@dataclass(frozen=True)
class ResultUids:
    sr: str
    sr_series: str
    seg: str
    seg_series: str

    @classmethod
    def of(cls, series_uid: str, device_uid: str) -> ResultUids:
        def uid(kind: str) -> str:
            return str(generate_uid(entropy_srcs=[series_uid, device_uid, kind]))

        return cls(uid("sr"), uid("sr-series"), uid("seg"), uid("seg-series"))

    @property
    def series(self) -> tuple[str, str]:
        return self.sr_series, self.seg_series
