"""The shipped network: only the chosen outputs, in their order, with their calibration folded in."""

from __future__ import annotations

import torch

from inference.models.chexnet import LABELS
from inference.models.demo_cxr import DemoCXRNet
from inference.training.demo_cxr_recipe import Recipe
from inference.training.demo_cxr_training import shipped_model


def test_the_shipped_model_keeps_the_chosen_outputs_with_their_calibration() -> None:
    recipe = Recipe(outputs=("Effusion", "Cardiomegaly"), width=8)
    torch.manual_seed(0)
    trained = DemoCXRNet(n_outputs=len(LABELS), width=8).eval()
    shipped = shipped_model(trained, recipe, [(2.0, -1.0), (0.5, 3.0)])
    batch = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        everything, chosen = trained(batch), shipped(batch)
    effusion, cardiomegaly = LABELS.index("Effusion"), LABELS.index("Cardiomegaly")
    assert torch.allclose(chosen[:, 0], 2.0 * everything[:, effusion] - 1.0, atol=1e-5)
    assert torch.allclose(chosen[:, 1], 0.5 * everything[:, cardiomegaly] + 3.0, atol=1e-5)
