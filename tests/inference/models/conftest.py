"""Stand-in CheXNet checkpoints: one random DenseNet-121 written in every published layout.

The real checkpoint cannot be shipped, so each writer reproduces a layout from its description (see
``inference/models/chexnet.py``): key names, wrappers, the legacy (pre-1.6) file format, and for the
jrzech checkpoint a whole pickled "torchvision" model whose classes exist only while it is being saved.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from inference.models.densenet import DenseNet121

StateDict = dict[str, torch.Tensor]


def random_densenet(seed: int = 0, num_classes: int = 14) -> DenseNet121:
    """A DenseNet-121 in eval mode whose batch norms are not the identity, so that every tensor matters."""
    torch.manual_seed(seed)
    model = DenseNet121(num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(7)
        model.classifier.bias.normal_(0.0, 1.0)
    return model.eval()


@pytest.fixture(scope="session")
def reference_model() -> DenseNet121:
    return random_densenet()


@pytest.fixture(scope="session")
def reference_state(reference_model: DenseNet121) -> StateDict:
    return {name: value.clone() for name, value in reference_model.state_dict().items()}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def old_names(state: StateDict) -> StateDict:
    """PyTorch 0.4 names: dense layers say ``norm.1`` for ``norm1``; batch norms lack num_batches_tracked."""
    return {
        re.sub(r"\.(norm|conv)([12])\.", r".\1.\2.", name): value
        for name, value in state.items()
        if not name.endswith("num_batches_tracked")
    }


def head_as_sequential(state: StateDict) -> StateDict:
    return {name.replace("classifier.", "classifier.0.", 1): value for name, value in state.items()}


def write_modern(state: StateDict, path: Path) -> None:
    torch.save(state, path)


def write_modern_sequential_head(state: StateDict, path: Path) -> None:
    torch.save(head_as_sequential(state), path)


def write_pytorch04(state: StateDict, path: Path) -> None:
    torch.save(old_names(state), path, _use_new_zipfile_serialization=False)


def write_widely_copied(state: StateDict, path: Path) -> None:
    weights = {
        f"module.densenet121.{name}": value for name, value in head_as_sequential(old_names(state)).items()
    }
    torch.save(
        {"epoch": 1, "arch": "densenet121", "state_dict": weights}, path, _use_new_zipfile_serialization=False
    )


FAKE_DENSENET_SOURCE = """
from torch import nn


class DenseNet(nn.Module):
    pass


class _DenseBlock(nn.Sequential):
    pass


class _DenseLayer(nn.Sequential):
    pass


class _Transition(nn.Sequential):
    pass
"""


def fake_torchvision(folder: Path) -> list[types.ModuleType]:
    """``torchvision``, ``torchvision.models`` and ``torchvision.models.densenet`` with the four classes
    torchvision 0.2 had, not in ``sys.modules`` (see ``installed``). The classes live in a real source file,
    so that a legacy ``torch.save`` records their source as PyTorch 0.4 did for the real checkpoint."""
    source = folder / "fake_torchvision_densenet.py"
    source.write_text(FAKE_DENSENET_SOURCE)
    spec = importlib.util.spec_from_file_location("torchvision.models.densenet", source)
    assert spec is not None and spec.loader is not None
    densenet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(densenet)
    package = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    package.models = models  # type: ignore[attr-defined]
    models.densenet = densenet  # type: ignore[attr-defined]
    return [package, models, densenet]


@contextmanager
def installed(modules: list[types.ModuleType]) -> Iterator[None]:
    """The modules importable (pickle needs that to save their classes) only inside the block."""
    saved = {module.__name__: sys.modules.get(module.__name__) for module in modules}
    sys.modules.update({module.__name__: module for module in modules})
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                del sys.modules[name]
            else:
                sys.modules[name] = previous


def pickled_torchvision_model(densenet: types.ModuleType, state: StateDict) -> nn.Module:
    """A whole torchvision-0.2-style DenseNet-121 object holding ``state``, as jrzech's checkpoint pickles it:
    dense layers are Sequentials with ``norm.1``/``relu.1``/``conv.1`` children, the head is
    Sequential(Linear(1024, 14), Sigmoid)."""
    source = DenseNet121(num_classes=state["classifier.weight"].shape[0])
    source.load_state_dict(state)
    features = nn.Sequential()
    for name, child in source.features.named_children():
        if name.startswith("denseblock"):
            block = densenet._DenseBlock()
            for layer_name, layer in child.named_children():
                old_layer = densenet._DenseLayer()
                for part in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
                    module = nn.ReLU(inplace=True) if part.startswith("relu") else getattr(layer, part)
                    # today's add_module refuses dotted names; torchvision 0.2 could still make them
                    old_layer._modules[f"{part[:-1]}.{part[-1]}"] = module
                old_layer.drop_rate = 0
                block.add_module(layer_name, old_layer)
            features.add_module(name, block)
        elif name.startswith("transition"):
            transition = densenet._Transition()
            for part, module in child.named_children():
                transition.add_module(part, module)
            features.add_module(name, transition)
        else:
            features.add_module(name, child)
    model = densenet.DenseNet()
    model.features = features
    model.classifier = nn.Sequential(source.classifier, nn.Sigmoid())
    return model


def write_jrzech(state: StateDict, path: Path, legacy: bool = True) -> None:
    """Format d: the fake torchvision exists while the checkpoint is saved and is gone before it is loaded."""
    modules = fake_torchvision(path.parent)
    with installed(modules):
        checkpoint: dict[str, Any] = {
            "model": pickled_torchvision_model(modules[-1], state),
            "best_loss": 0.1473,
            "epoch": 5,
            "rng_state": torch.get_rng_state(),
            "LR": 0.001,
        }
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
