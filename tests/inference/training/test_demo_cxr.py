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
from scipy.stats import mannwhitneyu

from inference.manifest import Clearance, load_manifest
from inference.models.demo_cxr import DemoCXRNet
from inference.package import open_package
from inference.runtime.loader import load_model
from inference.runtime.transform import to_model_input
from inference.training import demo_cxr
from openaim.settings import REPO_ROOT
from openaim.uids import is_uid

PACKAGE = Path(__file__).resolve().parents[3] / "inference" / "packages" / "openaim-demo-cxr"


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    return json.loads((PACKAGE / demo_cxr.METRICS_NAME).read_text())


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
    assert manifest.weights_sha256 == metrics["weights_sha256"] == _sha256(PACKAGE / demo_cxr.WEIGHTS_NAME)


def test_the_manifest_says_plainly_what_the_model_is() -> None:
    manifest = load_manifest(PACKAGE)
    assert manifest.id == "openaim.demo-cxr"
    assert manifest.vendor == "openaim (demonstration)"
    assert "DEMONSTRATION, NOT FOR CLINICAL USE" in manifest.intended_use
    assert manifest.regulatory.status is Clearance.RESEARCH_USE_ONLY
    assert "ChestX-ray14" in manifest.training_data
    assert "Wang X." in manifest.training_data
    assert manifest.runtime.kind == "state_dict"
    assert manifest.runtime.module == demo_cxr.MODULE
    assert manifest.device_uid == demo_cxr.device_uid(manifest.weights_sha256)


def test_it_beats_chance_on_cardiomegaly_and_effusion(metrics: dict[str, Any]) -> None:
    measured = {result["label"]: result for result in metrics["outputs"]}
    for label in ("Cardiomegaly", "Effusion"):
        low, _ = measured[label]["auroc_ci95"]
        assert low > 0.5, f"{label}: the 95% interval of the held-out AUROC reaches chance"


def test_the_model_card_shows_the_measured_numbers(metrics: dict[str, Any]) -> None:
    card = (PACKAGE / demo_cxr.CARD_NAME).read_text()
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
    labels = np.array([[int(row[label]) for label in demo_cxr.LABELS] for row in rows])
    recipe = metrics["recipe"]
    _, test = demo_cxr.split_by_patient(names, labels, recipe["test_fraction"], recipe["seed"])
    digest = hashlib.sha256("\n".join(names[i] for i in test).encode()).hexdigest()
    assert digest == metrics["split"]["test_set_sha256"]


# -- the pieces of the script ---------------------------------------------------------------------------


def test_the_split_keeps_each_patient_on_one_side_and_repeats() -> None:
    names = [f"{patient:08d}_{visit:03d}.png" for patient in range(40) for visit in range(patient % 3 + 1)]
    labels = np.zeros((len(names), len(demo_cxr.LABELS)))
    labels[::5, 1] = 1
    train, test = demo_cxr.split_by_patient(names, labels, test_fraction=0.25, seed=7)
    assert sorted(np.concatenate([train, test])) == list(range(len(names)))
    assert not {names[i][:8] for i in train} & {names[i][:8] for i in test}
    assert 8 <= len({names[i][:8] for i in test}) <= 12
    again_train, again_test = demo_cxr.split_by_patient(names, labels, test_fraction=0.25, seed=7)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)


def test_auroc_is_the_mann_whitney_statistic_ties_included() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random(200) < 0.2).astype(float)
    scores = np.round(rng.random(200) + 0.5 * truth, 1)  # rounded: many ties
    u = mannwhitneyu(scores[truth > 0], scores[truth == 0]).statistic
    assert demo_cxr.auroc(scores, truth) == pytest.approx(u / (truth.sum() * (1 - truth).sum()))
    assert demo_cxr.auroc(np.array([0.1, 0.2, 0.9]), np.array([0.0, 0.0, 1.0])) == 1.0
    assert demo_cxr.auroc(np.array([0.1, 0.2]), np.array([1.0, 1.0])) is None


def test_the_delong_interval_brackets_the_auroc_and_narrows_with_more_cases() -> None:
    rng = np.random.default_rng(1)

    def width(n: int) -> float:
        truth = (np.arange(n) % 4 == 0).astype(float)
        scores = rng.random(n) + 0.6 * truth
        interval = demo_cxr.delong_interval(scores, truth)
        assert interval is not None
        low, high = interval
        assert low <= demo_cxr.auroc(scores, truth) <= high  # type: ignore[operator]
        return high - low

    assert width(2000) < width(100) / 2


def test_the_youden_threshold_separates_separable_scores() -> None:
    truth = np.array([0, 0, 0, 1, 1], dtype=float)
    threshold = demo_cxr.youden_threshold(np.array([0.1, 0.2, 0.3, 0.6, 0.8]), truth)
    assert 0.3 < threshold < 0.6


def test_platt_scaling_recovers_a_known_calibration() -> None:
    rng = np.random.default_rng(2)
    raw = rng.normal(-4.0, 1.5, 4000)  # logits of a model that is too sure of "no"
    truth = (rng.random(4000) < 1 / (1 + np.exp(-(2.0 * raw + 6.0)))).astype(float)
    scale, offset = demo_cxr.platt_scaling(1 / (1 + np.exp(-raw)), truth)
    assert scale == pytest.approx(2.0, abs=0.3) and offset == pytest.approx(6.0, abs=1.0)
    assert demo_cxr.platt_scaling(np.array([0.9, 0.1]), np.array([0.0, 1.0])) == (1.0, 0.0)  # no reversal


def test_the_shipped_model_keeps_the_chosen_outputs_with_their_calibration() -> None:
    recipe = demo_cxr.Recipe(outputs=("Effusion", "Cardiomegaly"), width=8)
    torch.manual_seed(0)
    trained = DemoCXRNet(n_outputs=len(demo_cxr.LABELS), width=8).eval()
    shipped = demo_cxr.shipped_model(trained, recipe, [(2.0, -1.0), (0.5, 3.0)])
    batch = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        everything, chosen = trained(batch), shipped(batch)
    effusion, cardiomegaly = demo_cxr.LABELS.index("Effusion"), demo_cxr.LABELS.index("Cardiomegaly")
    assert torch.allclose(chosen[:, 0], 2.0 * everything[:, effusion] - 1.0, atol=1e-5)
    assert torch.allclose(chosen[:, 1], 0.5 * everything[:, cardiomegaly] + 3.0, atol=1e-5)


def test_the_device_uid_is_a_dicom_uid_that_follows_the_weights() -> None:
    first, second = demo_cxr.device_uid("f" * 64), demo_cxr.device_uid("0123" * 16)
    assert is_uid(first) and is_uid(second) and first != second


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
    assert _sha256(first / demo_cxr.WEIGHTS_NAME) == _sha256(second / demo_cxr.WEIGHTS_NAME)
    model = load_model(open_package(first))
    with torch.inference_mode():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, len(demo_cxr.Recipe().outputs))
    assert json.loads((first / demo_cxr.METRICS_NAME).read_text())["split"]["total_images"] == 24


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
