"""The demo chest X-ray package: it loads like any vendor's, its claims are the numbers the training script
measured, and the script itself is deterministic (checked on a few images, in seconds; no real training)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inference.manifest import Clearance, load_manifest
from inference.models.chexnet import LABELS
from inference.package import open_package
from inference.runtime.loader import load_model
from inference.runtime.transform import to_model_input
from inference.training import demo_cxr
from inference.training.demo_cxr_data import split_by_patient
from inference.training.demo_cxr_metrics import TRIAGE_RULE_TEXT
from inference.training.demo_cxr_package import CARD_NAME, METRICS_NAME, MODULE, WEIGHTS_NAME, device_uid
from inference.training.demo_cxr_recipe import Recipe
from openaim.settings import REPO_ROOT

PACKAGE = Path(__file__).resolve().parents[3] / "inference" / "packages" / "openaim-demo-cxr"


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    return json.loads((PACKAGE / METRICS_NAME).read_text())


# -- the committed package ------------------------------------------------------------------------------


def test_the_committed_package_loads_and_gives_one_logit_per_output() -> None:
    package = open_package(PACKAGE)
    model = load_model(package)
    size = package.manifest.preprocessing.input_size
    with torch.inference_mode():
        logits = model(torch.zeros(1, 1, size, size))
    assert logits.shape == (1, len(package.manifest.outputs))
    assert package.weights_path.stat().st_size <= 10 * 1024 * 1024  # committed to git


def test_the_committed_package_scores_a_real_chest_xray_through_the_platform_transform(
    shared_data: Path,
) -> None:
    package = open_package(PACKAGE)
    model = load_model(package)
    with Image.open(shared_data / "cxr14" / "small" / "00000075_000.png") as picture:
        grey = np.asarray(picture.convert("L"))
    tensor, _ = to_model_input(grey, package.manifest.preprocessing)
    with torch.inference_mode():
        probabilities = torch.sigmoid(model(tensor[None]))
    assert torch.isfinite(probabilities).all()
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_the_manifest_claims_the_held_out_aurocs_the_script_measured(metrics: dict[str, Any]) -> None:
    manifest = load_manifest(PACKAGE)
    measured = {result["label"]: result for result in metrics["outputs"]}
    assert [output.label for output in manifest.outputs] == list(measured)
    for output in manifest.outputs:
        assert output.threshold == measured[output.label]["threshold"]
    claims = {claim.label: claim for claim in manifest.performance_claims}
    assert set(claims) == {label for label, result in measured.items() if result["auroc"] is not None}
    for label, claim in claims.items():
        assert claim.metric == "AUROC"
        assert claim.value == measured[label]["auroc"]
        assert f"n={metrics['split']['test_images']}" in claim.dataset
        assert f"{measured[label]['test_positives']} positive" in claim.dataset
    assert manifest.weights_sha256 == metrics["weights_sha256"] == _sha256(PACKAGE / WEIGHTS_NAME)


def test_the_manifest_says_plainly_what_the_model_is() -> None:
    manifest = load_manifest(PACKAGE)
    assert manifest.id == "openaim.demo-cxr"
    assert manifest.vendor == "openaim (demonstration)"
    assert "DEMONSTRATION, NOT FOR CLINICAL USE" in manifest.intended_use
    assert manifest.regulatory.status is Clearance.RESEARCH_USE_ONLY
    assert "ChestX-ray14" in manifest.training_data
    assert "Wang X." in manifest.training_data
    assert manifest.runtime.kind == "state_dict"
    assert manifest.runtime.module == MODULE
    assert manifest.device_uid == device_uid(manifest.weights_sha256)


def test_it_beats_chance_on_cardiomegaly_and_effusion(metrics: dict[str, Any]) -> None:
    measured = {result["label"]: result for result in metrics["outputs"]}
    for label in ("Cardiomegaly", "Effusion"):
        low, _ = measured[label]["auroc_ci95"]
        assert low > 0.5, f"{label}: the 95% interval of the held-out AUROC reaches chance"


def test_the_model_card_shows_the_measured_numbers(metrics: dict[str, Any]) -> None:
    card = (PACKAGE / CARD_NAME).read_text()
    assert "not for clinical use" in card.splitlines()[2].lower()  # at the top, not in a footnote
    for result in metrics["outputs"]:
        assert f"| {result['auroc']:.2f} |" in card
    assert "python -m inference.training.demo_cxr --out inference/packages/openaim-demo-cxr" in card
    machine_paths = (str(REPO_ROOT), str(REPO_ROOT.parent))  # where it was trained must not leak in
    assert not any(path in card + json.dumps(metrics) for path in machine_paths)


def test_the_held_out_images_are_the_ones_the_split_gives_today(
    shared_data: Path, metrics: dict[str, Any]
) -> None:
    with (shared_data / "cxr14" / "labels.csv").open(newline="") as stream:
        rows = sorted(csv.DictReader(stream), key=lambda row: row["image"])
    names = [row["image"] for row in rows]
    labels = np.array([[int(row[label]) for label in LABELS] for row in rows])
    recipe = metrics["recipe"]
    _, test = split_by_patient(names, labels, recipe["test_fraction"], recipe["seed"])
    digest = hashlib.sha256("\n".join(names[i] for i in test).encode()).hexdigest()
    assert digest == metrics["split"]["test_set_sha256"]


# -- the script as a whole ------------------------------------------------------------------------------


def test_a_small_run_writes_a_loadable_package_and_repeats_byte_for_byte(
    tmp_path: Path, shared_data: Path
) -> None:
    def run(name: str) -> Path:
        out = tmp_path / name
        arguments = ["--out", str(out), "--data", str(shared_data / "cxr14"), "--limit", "24"]
        arguments += ["--epochs", "1", "--input-size", "32", "--threshold-folds", "2"]
        assert demo_cxr.main(arguments) == 0
        return out

    first, second = run("first"), run("second")
    assert _sha256(first / WEIGHTS_NAME) == _sha256(second / WEIGHTS_NAME)
    model = load_model(open_package(first))
    with torch.inference_mode():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, len(Recipe().outputs))
    assert json.loads((first / METRICS_NAME).read_text())["split"]["total_images"] == 24
    _assert_triage_is_by_a_stated_rule(first)


def _assert_triage_is_by_a_stated_rule(package: Path) -> None:
    """Each triage rule's bar is the one the stated rule chose on validation data, and the card states the
    rule and the share of studies each level flags, so a reader can tell a flag's rate is by design."""
    triage = json.loads((package / METRICS_NAME).read_text())["triage"]
    manifest = load_manifest(package)
    assert (
        [(rule.label, rule.priority.value, rule.min_probability) for rule in manifest.triage]
        == [(rule["label"], rule["priority"], rule["min_probability"]) for rule in triage["rules"]]
        == [("Effusion", "priority", triage["rules"][0]["min_probability"])]
    )
    for share in (triage["validation_share"], triage["test_share"]):
        assert set(share) == {"urgent", "priority", "routine"}
        assert sum(share.values()) == pytest.approx(1, abs=0.002)
    card = (package / CARD_NAME).read_text()
    assert TRIAGE_RULE_TEXT in card.replace("\n", " ")
    assert f"priority {100 * triage['validation_share']['priority']:.1f}%" in card


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
