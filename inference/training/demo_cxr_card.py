"""The demo chest X-ray package's MODEL_CARD.md: a template filled from metrics.json and the manifest."""

from __future__ import annotations

from typing import Any

from scipy.stats import binomtest

from inference.manifest import Manifest
from inference.training.demo_cxr_package import DATA_ATTRIBUTION, FINDINGS, VERSION
from inference.training.demo_cxr_recipe import Recipe


def model_card(recipe: Recipe, metrics: dict[str, Any], manifest: Manifest) -> str:
    """MODEL_CARD.md, written from the same numbers as the manifest so the two cannot disagree."""
    split, environment = metrics["split"], metrics["environment"]
    rows = []
    for result in metrics["outputs"]:
        interval = result["auroc_ci95"]
        rows.append(
            f"| {FINDINGS[result['label']].display_name} | {_number(result['auroc'])} | "
            f"{'-' if interval is None else f'{interval[0]:.2f} to {interval[1]:.2f}'} | "
            f"{result['test_positives']} / {result['test_negatives']} | "
            f"{_number(result['chexnet_auroc_same_split'])} | {result['threshold']:.4f} | "
            f"{_number(result['test_sensitivity_at_threshold'])} / "
            f"{_number(result['test_specificity_at_threshold'])} |"
        )
    codes = ", ".join(
        f"{output.display_name} SNOMED CT {output.code.value} ({output.code.meaning})"
        for output in manifest.outputs
        if output.code
    )
    return CARD_TEMPLATE.format(
        version=VERSION,
        outputs=", ".join(FINDINGS[label].display_name for label in recipe.outputs),
        attribution=DATA_ATTRIBUTION,
        total=split["total_images"],
        train=split["train_images"],
        train_patients=split["train_patients"],
        test=split["test_images"],
        test_patients=split["test_patients"],
        test_percent=round(100 * recipe.test_fraction),
        seed=recipe.seed,
        size=recipe.input_size,
        width=recipe.width,
        parameters=metrics["parameters"],
        weights_kib=metrics["weights_bytes"] // 1024,
        epochs=recipe.epochs,
        batch=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        ema=recipe.ema_decay,
        targets=_targets_text(recipe),
        weak=_weak_text(metrics["outputs"]),
        folds=metrics["threshold_folds"],
        cross_validated=", ".join(
            f"{label} {_number(value)}"
            for label, value in metrics["training_split_cross_validated_auroc"].items()
        )
        or "not computed",
        table="\n".join(rows),
        threshold_method=metrics["threshold_method"],
        codes=codes or "none",
        triage=_triage_text(metrics["triage"]),
        localisation=_localisation_text(metrics["localisation"]),
        localisation_verdict=_localisation_verdict(metrics["localisation"]["all"]),
        map_side=recipe.input_size // 8,
        wall_minutes=metrics["wall_seconds"] / 60,
        threads=environment["torch_threads"],
        cpus=environment["cpu_count"],
        torch=environment["torch"],
        sha=metrics["weights_sha256"],
        uid=manifest.device_uid,
    )


def _targets_text(recipe: Recipe) -> str:
    teacher = (
        "the published CheXNet reproduction (`ref_prob_*` in labels.csv: a DenseNet-121 trained on "
        "ChestX-ray14, run on each training image)"
    )
    parts = []
    if recipe.distill < 1:
        target = "the true NIH label" if recipe.distill == 0 else f"{1 - recipe.distill:g} x the true label"
        if recipe.distill > 0:
            target += f" + {recipe.distill:g} x CheXNet's probability"
        parts.append(f"binary cross-entropy against {target}")
    else:
        parts.append("binary cross-entropy against CheXNet's probability alone")
    if recipe.logit_match:
        parts.append(
            f"{recipe.logit_match:g} x a smooth-L1 loss pulling each logit towards CheXNet's log-odds"
        )
    return (
        f"Knowledge distillation from {teacher}. The loss, over all 14 NIH labels: "
        + " plus ".join(parts)
        + ". The held-out images' labels and CheXNet outputs are never used for training."
    )


def _weak_text(results: list[dict[str, Any]]) -> str:
    weak = [
        FINDINGS[result["label"]].display_name
        for result in results
        if result["auroc_ci95"] is None or result["auroc_ci95"][0] <= 0.5
    ]
    if not weak:
        return ""
    return (
        f"**Not shown to beat chance on the held-out split: {', '.join(weak)}** (the interval reaches 0.5). "
        "The outputs were fixed before the held-out split was looked at, and choosing them by their "
        "held-out results would make that split a selection set, so they stay: treat their flags and "
        "heatmaps as noise. "
    )


def _triage_text(triage: dict[str, Any]) -> str:
    """The rule in words, each rule's bar, and the share of studies each level flags: a reader can then
    tell whether a flag's rate is by design."""
    rules = "; ".join(
        f"{FINDINGS[rule['label']].display_name} raises a study to {rule['priority']} at probability >= "
        f"{rule['min_probability']:.4f} (validation sensitivity {_number(rule['validation_sensitivity'])}, "
        f"specificity {_number(rule['validation_specificity'])})"
        for rule in triage["rules"]
    )

    def shares(share: dict[str, float]) -> str:
        return ", ".join(f"{level} {100 * value:.1f}%" for level, value in share.items())

    return (
        f"{triage['rule']}. Rules: {rules or 'none'}. Share of studies at each level on the "
        f"{triage['validation_images']} validation images (the scores the thresholds were chosen on): "
        f"{shares(triage['validation_share'])}; on the held-out split: {shares(triage['test_share'])}. "
        "The set is enriched for findings, so a hospital's worklist would see fewer flags"
    )


def _localisation_text(localisation: dict[str, Any]) -> str:
    """A table of how often the heatmap's peak falls in a radiologist's box, beside chance, and how well
    the drawn boxes overlap it; by split and by finding, with the counts behind every rate."""
    groups = [("all boxed findings", localisation["all"])]
    groups += [
        (f"{split.replace('_', '-')} images", result) for split, result in localisation["by_split"].items()
    ]
    groups += [(FINDINGS[label].display_name, result) for label, result in localisation["by_label"].items()]
    rows = [
        f"| {name} | {result['boxes']} | {_of(result['positive_at_threshold'], result['shipped'])} | "
        f"{result['pointing_hits']} ({_number(result['pointing_rate'])}) | "
        f"{_number(result['chance_rate'])} | "
        f"{_number(result['mean_best_iou'])} | {result['iou_hits']} | {result['mean_boxes_drawn']:.1f} | "
        f"{100 * result['mean_box_area']:.0f}% |"
        for name, result in groups
        if result["boxes"]
    ]
    if not rows:
        return "No shared image has a radiologist's box for a finding this model ships: not measured."
    return (
        "| boxes of | boxes | positive at threshold | peak inside the box | chance | mean best IoU | "
        f"IoU >= {localisation['iou_hit']} | boxes drawn per map | mean drawn box, share of image |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def _localisation_verdict(result: dict[str, Any]) -> str:
    """Whether the peak lands in the radiologist's box more often than a random point would: a one-sided
    binomial test of the hits against the boxes' mean chance."""
    boxes = result["boxes"]
    if not boxes:
        return ""
    hits = result["pointing_hits"]
    expected = boxes * result["chance_rate"]
    p_value = binomtest(hits, boxes, result["chance_rate"], alternative="greater").pvalue
    counted = (
        f"Over all {boxes} boxes the map's peak fell inside the radiologist's box {_times(hits)}, where a "
        f"random point would land {expected:.1f} times (one-sided binomial p = {p_value:.2f}). "
    )
    if p_value < 0.05:
        return counted + "The peak points at the finding more often than chance, on very few boxes."
    return counted + (
        "**The heatmaps are not shown to point at findings better than chance**: read them as where the "
        "model's evidence sits, never as where a finding is."
    )


def _times(count: int) -> str:
    return {0: "no time", 1: "once", 2: "twice"}.get(count, f"{count} times")


def _of(count: int, total: int) -> str:
    return f"{count} of {total}" if total else "-"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


CARD_TEMPLATE = """\
# openaim demonstration chest X-ray model {version}

**A demonstration, not for clinical use.** This model exists to show how the openaim platform installs a
model, runs it, draws its heatmaps, flags a worklist and collects readers' feedback. It was trained in
minutes on {train} images and two CPU cores; it is far weaker than any clinical product and must never
inform the care of a patient.

## What it is
- A small residual CNN (`inference.models.demo_cxr:DemoCXRNet`, width {width}: {parameters} parameters,
  {weights_kib} KiB of weights) reading one grey channel at {size}x{size} pixels.
- Outputs (logits; the platform applies the sigmoid): {outputs}.
- Class activation maps work: the network ends in `features`, global average pooling and one linear
  `classifier`. The map is {map_side}x{map_side} (1/8 of the input): the last stage (1/32) is upsampled
  and added to projections of the 1/16 and 1/8 stages, as in a feature pyramid, so it can point at a
  region rather than a half of the chest.
- The package: `manifest.json`, `weights.pt` (a state dict, sha256 `{sha}`), `metrics.json` (every number
  on this page, written by the training script) and this card. DICOM device UID `{uid}`, derived from
  the weights' sha256, so every retrained version gets its own.

## Data
{total} frontal chest radiographs from NIH ChestX-ray14, as redistributed in the starter images of
jrzech/reproduce-chexnet: 465 downsized to 256x256 and 56 at 1024x1024, 8-bit greyscale PNG. Labels are
NIH's, text-mined from the radiology reports. The set is enriched for findings; it is not a screening
population. No age, sex or scanner data comes with it.

Attribution: {attribution}

## Split
By patient (the first 8 digits of an NIH file name), stratified by each patient's rarest positive finding,
with a seeded shuffle (seed {seed}): {train} images ({train_patients} patients) to train, {test} images
({test_patients} patients, about {test_percent}%) held out. The held-out labels and CheXNet outputs were used
only to measure the final model, never to train it, to choose its thresholds or to choose its recipe; the
recipe (input size, epochs, loss, which outputs to ship) was chosen by cross-validation inside the
training split.

## Training recipe
- Pixels go through the platform's own `inference.runtime.transform.to_model_input` with this package's
  preprocessing (short side resized to {size}, centre crop, one channel, (x/255 - 0.5) / 0.25), so training
  and inference see the same numbers. The inputs are computed once and kept in memory.
- Augmentation per batch: rotation within 10 degrees, zoom 0.87-1.13, shift within 8%, contrast
  0.8-1.2 and brightness within 0.3 (in normalised units). No horizontal flip (the heart is on the left).
- {targets}
- All 14 labels are learnt, as extra signal for the shared features; the package ships only {outputs}
  (the other rows of the classifier are dropped; see "How the recipe and outputs were chosen").
- AdamW (learning rate {learning_rate}, weight decay {weight_decay}), one-cycle schedule, {epochs} epochs of
  batches of {batch}; the shipped weights are an exponential moving average (decay {ema}).
- Seeded and deterministic: `torch.use_deterministic_algorithms(True)`, {threads} threads. Two runs on
  one machine give byte-identical weights; another CPU or torch version may differ in the last bits.

## How the recipe and outputs were chosen
Before this run, exploratory 3-fold cross-validation inside the training split (never the held-out split)
compared input sizes 128 and 160, 40, 80 and 120 epochs, soft-target cross-entropy against logit matching
(and both), and widths 24 and 32. Longer training and logit matching helped; 160 pixels and the narrower
network did not. The shipped outputs are those that reached a cross-validated AUROC of at least 0.70 with at
least 25 training positives in the exploratory run of this exact recipe: Cardiomegaly 0.85, Effusion 0.76,
Mass 0.72, Emphysema 0.73. Edema (0.79) and Hernia (0.75) had 13 positives each, too few to trust;
Pneumothorax (0.59) is not shipped, so this model raises no urgent flag.

This run's own cross-validated AUROC inside the training split ({folds} folds, the scores its thresholds
were chosen on), for all 14 labels: {cross_validated}. Its folds differ from the exploratory run's, and
with 30-60 positives per label the estimates move by up to 0.1 between fold assignments.

## Performance on the held-out split
| Finding | AUROC | 95% CI (DeLong) | test positives / negatives | CheXNet, same images | threshold \
| sensitivity / specificity at threshold |
|---|---|---|---|---|---|---|
{table}

With ten-odd positives per finding the intervals are wide: an interval wholly above 0.5 says "better than
chance", not how much better. {weak}The CheXNet column is the 121-layer teacher, trained on about 100,000
ChestX-ray14 images, on the same held-out images; it is shown for scale only (it may have seen these
images during its own training, so its numbers may be optimistic).

## Where the heatmaps point
NIH published boxes that a radiologist drew around findings on 880 ChestX-ray14 images
(`BBox_List_2017.csv`). Ten of them fall on the shared images, and they are the only localisation truth
here (`inference/training/nih_boxes.csv`). The boxes were never used for training, but
images on the training side were seen with their labels, so the held-out row is the honest one. For each
box, the platform's own code draws the heatmap and its boxes, and counts: whether the map's highest point
lies inside the radiologist's box (beside **chance**, the share of the image the box covers, which is what
a random point would score); the best IoU between a drawn box and the radiologist's; and how many reach an
IoU of the stated bar. Boxes are drawn for every boxed finding here, even where the model's probability is
under its threshold (the platform draws them only above it; "positive at threshold" counts those it would
draw, among the boxes of shipped findings). Most of the ten boxes are for findings the package does not
ship (nodule, pneumonia, infiltration): the network learns all fourteen labels, and their maps come from
the same features, so they are scored too.

{localisation}

{localisation_verdict}
So few boxes give wide uncertainty: read the rates with their counts. A heatmap shows where the model's
evidence for a finding sits, not the finding's outline; for cardiomegaly the box is the whole heart.

## Probabilities and operating thresholds
{threshold_method}. Each output's Platt scale and offset (in metrics.json) are folded into its classifier
row, so the package still returns plain logits. The probabilities therefore estimate how likely a finding
is in a set enriched like this one, not in a hospital's population, and the thresholds are a
demonstration's: taken from a few dozen positives.

## Codes and triage
Codes: {codes}; the other outputs carry no code.

Triage: {triage}.

## Limitations
- Tiny data: {train} training images, a few dozen positives per finding; the model has learnt coarse
  appearance (heart size, blunted costophrenic angles, dense lower zones), not radiology.
- Enriched set: prevalence here is far above a hospital's, so predictive values do not transfer.
- No demographics: performance by age, sex or scanner is unknown.
- 8-bit PNG source (already windowed and downsized by NIH), not DICOM: real DICOM reaches the model
  through the platform's VOI/windowing to 8 bits, which may not match what NIH did.
- NIH labels are text-mined and noisy, and distillation passes on the teacher's errors as well as its
  knowledge.
- Frontal views only; the model has never seen a lateral view, a child, or a CT.

## Reproduce
```
python -m inference.training.demo_cxr --out inference/packages/openaim-demo-cxr
```
This run took {wall_minutes:.1f} minutes wall time for the whole script (loading, cross-validated
thresholds, training, evaluation, writing the package) on a machine with {cpus} CPU cores shared with
other jobs, torch {torch} with {threads} threads.
"""
