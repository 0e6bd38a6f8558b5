"""Who made a result: the algorithm's identity, written the same way into every SR and SEG.

IHE AI Results (AIR) asks that each result name its algorithm so that a reader, a PACS and an audit can
tell which model and which retrained version made it. One identity, taken from the manifest, is written
into four places, so that they can never disagree:

- the object's own General Equipment (Manufacturer, Manufacturer's Model Name, Software Versions,
  Device Serial Number): the algorithm, not the platform, because the equipment that made the content is
  the model; any PACS shows these attributes, while few show the sequences below;
- the Contributing Equipment Sequence, with the Device UID that changes with every retrained version;
- the SR's device observer context (TID 1004) and the SEG's per-segment Algorithm Identification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
from pydicom.sr.codedict import codes

from inference.dicom_results.coding import fit
from inference.manifest import Manifest

# PS3.16 CID 7005 "Contributing Equipment Purposes of Reference": (109102, DCM, "Processing Equipment"),
# equipment that processed composite instances to create new ones. A model reading an image and writing
# an SR/SEG does exactly that; "Modifying Equipment" (109103) is for equipment that changed an instance.
PURPOSE_OF_REFERENCE = codes.DCM.ProcessingEquipment


@dataclass(frozen=True)
class Algorithm:
    model_id: str  # the catalog's slug; written as the device serial number
    name: str
    vendor: str
    version: str
    device_uid: str  # a new one for every retrained version (IHE AIR)

    @classmethod
    def of(cls, manifest: Manifest) -> Algorithm:
        return cls(
            model_id=manifest.id,
            name=manifest.name,
            vendor=manifest.vendor,
            version=manifest.version,
            device_uid=manifest.device_uid,
        )

    def equipment(self) -> dict[str, Any]:
        """General Equipment keyword arguments for a highdicom SOP class constructor."""
        return {
            "manufacturer": fit(self.vendor),
            "manufacturer_model_name": fit(self.name),
            "software_versions": fit(self.version),
            "device_serial_number": fit(self.model_id),
        }

    def contributing_equipment(self, when: datetime) -> hd.ContributingEquipment:
        """This algorithm's item; highdicom adds the source's acquisition equipment and itself beside it."""
        item = hd.ContributingEquipment(
            manufacturer=fit(self.vendor),
            purpose_of_reference=PURPOSE_OF_REFERENCE,
            manufacturer_model_name=fit(self.name),
            software_versions=fit(self.version),
            device_serial_number=fit(self.model_id),
            contribution_datetime=when,
            contribution_description=fit(f"AI result made by {self.name} {self.version}"),
        )
        item.DeviceUID = self.device_uid  # in the item's macro (PS3.3 C.12.1), not a highdicom argument
        return item

    def sr_identification(self) -> hd.sr.AlgorithmIdentification:
        """TID 4019, put in every measurement group: the group says which algorithm produced it."""
        return hd.sr.AlgorithmIdentification(name=fit(self.name), version=fit(self.version))

    def seg_identification(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=fit(self.name),
            family=codes.cid7162.ArtificialIntelligence,
            version=fit(self.version),
            source=fit(self.vendor),
        )
