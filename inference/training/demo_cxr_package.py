"""What the demo chest X-ray package is called and says: its files, its findings (names, codes, triage)
and its manifest, built from the measured metrics and validated by the platform's own rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference.manifest import Manifest
from inference.training.demo_cxr_recipe import Recipe

MODULE = "inference.models.demo_cxr:DemoCXRNet"
WEIGHTS_NAME = "weights.pt"
METRICS_NAME = "metrics.json"
CARD_NAME = "MODEL_CARD.md"
PACKAGE_ID = "openaim.demo-cxr"
VERSION = "0.1.0"
DATA_ATTRIBUTION = (
    "NIH Clinical Center, ChestX-ray14; Wang X. et al., 'ChestX-ray8: Hospital-scale Chest X-ray Database "
    "and Benchmarks', CVPR 2017. Images and CheXNet reference outputs as redistributed by "
    "jrzech/reproduce-chexnet (Zech J.; BSD-3-Clause)."
)


@dataclass(frozen=True)
class Finding:
    """How one NIH label appears in the platform: its name for readers, its code, its triage rule."""

    display_name: str
    snomed: tuple[str, str] | None = None  # (code, meaning), only codes checked against SNOMED CT
    # urgent / priority, for outputs that should reorder a worklist; the bar comes from the stated rule
    # (demo_cxr_metrics.TRIAGE_SPECIFICITY) on validation data, not from here
    triage: str | None = None


FINDINGS = {
    "Atelectasis": Finding("Atelectasis"),
    "Cardiomegaly": Finding("Cardiomegaly", snomed=("8186001", "Cardiomegaly")),
    "Effusion": Finding("Pleural effusion", snomed=("60046008", "Pleural effusion"), triage="priority"),
    "Infiltration": Finding("Infiltration"),
    "Mass": Finding("Mass"),
    "Nodule": Finding("Nodule"),
    "Pneumonia": Finding("Pneumonia"),
    "Pneumothorax": Finding("Pneumothorax", snomed=("36118008", "Pneumothorax"), triage="urgent"),
    "Consolidation": Finding("Consolidation"),
    "Edema": Finding("Pulmonary oedema"),
    "Emphysema": Finding("Emphysema", snomed=("87433001", "Pulmonary emphysema")),
    "Fibrosis": Finding("Fibrosis"),
    "Pleural_Thickening": Finding("Pleural thickening"),
    "Hernia": Finding("Hernia"),
}


def device_uid(weights_sha256: str) -> str:
    """A DICOM UID under 2.25 (a UUID-derived root) taken from the weights: every retrain gets its own."""
    return "2.25." + str(int(weights_sha256[:32], 16))


def build_manifest(recipe: Recipe, metrics: dict[str, Any]) -> Manifest:
    """The manifest, validated by the platform's own rules before it is written."""
    split = metrics["split"]
    outputs, claims = [], []
    for result in metrics["outputs"]:
        label, finding = result["label"], FINDINGS[result["label"]]
        output: dict[str, Any] = {
            "label": label,
            "display_name": finding.display_name,
            "threshold": result["threshold"],
        }
        if finding.snomed:
            value, meaning = finding.snomed
            output["code"] = {"value": value, "scheme": "SCT", "meaning": meaning}
        outputs.append(output)
        if result["auroc"] is not None:
            low, high = result["auroc_ci95"]
            claims.append(
                {
                    "label": label,
                    "metric": "AUROC",
                    "value": result["auroc"],
                    "dataset": (
                        f"Held-out patient split of the shared NIH ChestX-ray14 images: "
                        f"n={split['test_images']}, {result['test_positives']} positive; "
                        f"95% CI {low:.2f}-{high:.2f} (DeLong)"
                    ),
                }
            )
    return Manifest.model_validate(
        {
            "id": PACKAGE_ID,
            "name": "openaim demonstration chest X-ray model",
            "vendor": "openaim (demonstration)",
            "version": VERSION,
            "intended_use": (
                "A DEMONSTRATION, NOT FOR CLINICAL USE. Shows how the openaim platform runs a model, draws "
                "its heatmaps, flags the worklist and collects reader feedback, on frontal adult chest "
                f"radiographs ({', '.join(FINDINGS[label].display_name for label in recipe.outputs)}). "
                f"It was trained on {split['train_images']} images and must not inform any patient's care."
            ),
            "contraindications": [
                "Any clinical use: it is a demonstration trained on a few hundred images.",
                "Lateral views, paediatric patients, CT or any non-chest image.",
                "Images with lines, tubes or devices it has never seen; post-operative chests.",
            ],
            "regulatory": {
                "status": "research_use_only",
                "statement": (
                    "For research and demonstration use only. Not a medical device; not cleared or "
                    "approved by any authority. Not for clinical use."
                ),
            },
            "training_data": (
                f"{split['train_images']} frontal chest radiographs ({split['train_patients']} patients) "
                f"of a {split['total_images']}-image subset of NIH ChestX-ray14, enriched for findings; "
                "8-bit PNG, labels text-mined from reports by NIH; no age, sex or scanner data. "
                "Trained on the true labels with knowledge distillation from the published CheXNet "
                "reproduction's outputs on the training images (see MODEL_CARD.md). " + DATA_ATTRIBUTION
            ),
            "performance_claims": claims,
            "outputs": outputs,
            "triage": [
                {key: rule[key] for key in ("label", "priority", "min_probability")}
                for rule in metrics["triage"]["rules"]
            ],
            "selectors": [
                {"keyword": "Modality", "values": ["CR", "DX"]},
                {"keyword": "BodyPartExamined", "values": ["CHEST"]},
                {"keyword": "ViewPosition", "values": ["PA", "AP"]},
            ],
            "preprocessing": recipe.preprocessing().model_dump(mode="json"),
            "runtime": {
                "kind": "state_dict",
                "weights": WEIGHTS_NAME,
                "module": MODULE,
                "kwargs": {"n_outputs": len(recipe.outputs), "in_channels": 1, "width": recipe.width},
            },
            "weights_sha256": metrics["weights_sha256"],
            "device_uid": device_uid(metrics["weights_sha256"]),
        }
    )
