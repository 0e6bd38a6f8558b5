"""Training the demo chest X-ray model: deterministic torch, augmentation, the distillation loop, scoring,
and the shipped network (only the chosen outputs, their calibration folded in)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional

from inference.models.chexnet import LABELS
from inference.models.demo_cxr import DemoCXRNet
from inference.training.demo_cxr_recipe import Recipe

THREADS = 2  # fixed: the number of threads changes how sums are split, hence the last bits of every weight
Log = Callable[[str], None]


def make_deterministic(seed: int) -> None:
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotation, zoom, shift and contrast/brightness: what differs between two chest films.

    No horizontal flip: the heart is on the left, and cardiomegaly is about where it is.
    """
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = torch.deg2rad(uniform(-10.0, 10.0))
    scale = uniform(0.87, 1.13)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, uniform(-0.08, 0.08)], dim=1),
            torch.stack([sin, cos, uniform(-0.08, 0.08)], dim=1),
        ],
        dim=1,
    )
    grid = functional.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    contrast = uniform(0.8, 1.2)[:, None, None, None]
    brightness = uniform(-0.3, 0.3)[:, None, None, None]
    return moved * contrast + brightness


def soft_targets(labels: np.ndarray, reference: np.ndarray, distill: float) -> torch.Tensor:
    return torch.from_numpy((1.0 - distill) * labels + distill * reference).float()


def train(
    images: torch.Tensor, labels: np.ndarray, reference: np.ndarray, recipe: Recipe, log: Log
) -> torch.nn.Module:
    """A DemoCXRNet with one output per NIH label, trained on the true labels and CheXNet's outputs (as
    the recipe weighs them); returns the exponential moving average of its weights.

    All fourteen labels are learnt, although fewer are shipped: the others are extra signal for the shared
    features (CheXNet's outputs exist for every label), and shipping is slicing the classifier's rows.
    """
    targets = soft_targets(labels, reference, recipe.distill)
    reference_logits = torch.logit(torch.from_numpy(reference).float().clamp(1e-4, 1 - 1e-4))
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    model = DemoCXRNet(n_outputs=len(LABELS), in_channels=images.shape[1], width=recipe.width)
    average = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True
    )
    batch_size = min(recipe.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size  # full batches only: batch norm needs more than one image
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15
    )
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            logits = model(augment(images[batch], generator))
            loss = functional.binary_cross_entropy_with_logits(logits, targets[batch])
            if recipe.logit_match:
                loss = loss + recipe.logit_match * functional.smooth_l1_loss(logits, reference_logits[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            average.update_parameters(model)
            total += float(loss.detach())
        if epoch % 10 == 9 or epoch == recipe.epochs - 1:
            log(f"epoch {epoch + 1}/{recipe.epochs}: loss {total / steps_per_epoch:.4f}")
    return average.module


def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Probabilities (sigmoid of the logits), in eval mode."""
    model.eval()
    with torch.inference_mode():
        logits = [model(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    return torch.sigmoid(torch.cat(logits)).numpy().astype(np.float64)


def shipped_model(
    model: torch.nn.Module, recipe: Recipe, calibration: Sequence[tuple[float, float]] | None = None
) -> DemoCXRNet:
    """The trained network keeping only the classifier rows of the shipped outputs, in their order, with
    each output's Platt (scale, offset) folded into its row: logits stay logits, CAM maps keep their shape."""
    rows = [LABELS.index(label) for label in recipe.outputs]
    scale, offset = (
        torch.tensor(values, dtype=torch.float32)
        for values in zip(*(calibration or [(1.0, 0.0)] * len(rows)), strict=True)
    )
    state = {name: value.clone() for name, value in model.state_dict().items() if name != "n_averaged"}
    state["classifier.weight"] = (scale[:, None] * state["classifier.weight"][rows]).contiguous()
    state["classifier.bias"] = (scale * state["classifier.bias"][rows] + offset).contiguous()
    shipped = DemoCXRNet(n_outputs=len(rows), in_channels=1, width=recipe.width)
    shipped.load_state_dict(state, strict=True)
    return shipped.eval()


def out_of_fold(
    images: torch.Tensor, labels: np.ndarray, reference: np.ndarray, recipe: Recipe, folds: int, log: Log
) -> np.ndarray:
    """Each training image scored by a model that did not train on it (k-fold inside the training split).

    Operating thresholds are chosen on these: the final model's scores on its own training images are
    optimistic (it has seen them), so thresholds taken there would be too high for new patients.
    """
    fold = np.random.default_rng(recipe.seed).permutation(len(images)) % folds
    scores = np.zeros(labels.shape)
    for k in range(folds):
        log(f"threshold fold {k + 1}/{folds}")
        inside, outside = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = train(images[inside], labels[inside], reference[inside], recipe, log)
        scores[outside] = predict(model, images[outside])
    return scores
