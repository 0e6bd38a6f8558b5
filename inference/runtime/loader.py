"""A verified package to a ready ``torch.nn.Module`` in eval mode.

A state-dict package names the class that receives the weights. Importing a module runs its code, so only
modules under an allowed prefix are imported (the platform's own ``inference.models`` by default); the
weights themselves are tensors only (``package.load_weights`` refuses anything else).

The contract for a module: ``forward(x)`` takes a (B, C, S, S) batch and returns (B, N) logits, one per
output in the manifest's order. A module that has ``features`` (the last convolutional feature map) and
``classifier`` (an ``nn.Linear`` after global average pooling) also gets class activation maps.
"""

from __future__ import annotations

import importlib

import torch

from inference.manifest import PackageError, StateDictRuntime
from inference.package import ModelPackage, load_weights

DEFAULT_ALLOWED_MODULES = ("inference.models",)


def load_model(
    package: ModelPackage, allowed_modules: tuple[str, ...] = DEFAULT_ALLOWED_MODULES
) -> torch.nn.Module:
    """The package's module with its verified weights, on the CPU, in eval mode."""
    runtime = package.manifest.runtime
    weights = load_weights(package)  # the hash is checked here, before anything is unpickled
    if isinstance(weights, torch.nn.Module):  # TorchScript
        model = weights
    else:
        assert isinstance(runtime, StateDictRuntime)
        model = _instantiate(runtime, allowed_modules)
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise PackageError(f"runtime.weights: do not fit {runtime.module} ({error})") from None
    model.eval()
    _check_output_width(model, package)
    return model


def _instantiate(runtime: StateDictRuntime, allowed_modules: tuple[str, ...]) -> torch.nn.Module:
    module_name, _, class_name = runtime.module.partition(":")
    if not any(module_name == prefix or module_name.startswith(prefix + ".") for prefix in allowed_modules):
        raise PackageError(
            f"runtime.module: {module_name!r} is not under an allowed prefix ({', '.join(allowed_modules)})"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise PackageError(f"runtime.module: cannot import {runtime.module} ({error})") from None
    try:
        model = cls(**runtime.kwargs)
    except TypeError as error:
        raise PackageError(f"runtime.kwargs: {runtime.module} refuses them ({error})") from None
    if not isinstance(model, torch.nn.Module):
        raise PackageError(f"runtime.module: {runtime.module} is not a torch.nn.Module")
    return model


def _check_output_width(model: torch.nn.Module, package: ModelPackage) -> None:
    # One dry run: a module whose outputs do not match the manifest's labels is refused at install time,
    # not discovered on the first patient.
    preprocessing = package.manifest.preprocessing
    probe = torch.zeros(1, preprocessing.channels, preprocessing.input_size, preprocessing.input_size)
    with torch.inference_mode():
        try:
            logits = model(probe)
        except Exception as error:  # any failure of vendor code is a refusal, with its reason
            raise PackageError(f"runtime: the model fails on a blank input ({error})") from None
    expected = len(package.manifest.outputs)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, expected):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise PackageError(f"runtime: the model returns {shape}, the manifest lists {expected} outputs")
