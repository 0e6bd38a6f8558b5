"""Published CheXNet checkpoints to a ``DenseNet121`` state dict, and a platform model package made from one.

Four layouts are in circulation, all of them a torchvision DenseNet-121 underneath:

a) a modern torchvision state dict (head ``classifier`` or ``classifier.0``);
b) a PyTorch 0.4-era state dict: dense layers name their parts ``norm.1``, ``conv.1``, ... and batch norms
   have no ``num_batches_tracked``;
c) the widely copied one: keys prefixed ``module.densenet121.``, head ``classifier.0``, often wrapped in
   ``{'state_dict': ...}``;
d) jrzech/reproduce-chexnet ``pretrained/checkpoint``: ``{'model': <the whole pickled torchvision model>,
   'best_loss', 'epoch', 'rng_state', 'LR'}``.

Unpickling runs code, so the order is the point: the file is read once, its hash compared (by default with
the git blob of the reference checkpoint; otherwise with a sha256 the caller vouches for), and only then
are the same bytes unpickled, by a restricted unpickler that resolves a short list of names: torch's
tensor-rebuilding functions, ``OrderedDict``, and the torchvision and ``torch.nn`` classes of a whole
pickled model, all mapped to ``PickledModule``, a class with no methods. So no code of the checkpoint's
choosing runs even when the hash matches, and torchvision is never imported. (torch's own ``weights_only``
unpickler cannot read format d: pre-1.6 files record every module class as a persistent id.)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import io
import json
import pickle
import re
import sys
import types
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.nn.backends import thnn

from inference.manifest import MANIFEST_NAME, Manifest, PackageError, load_manifest
from inference.models.densenet import DenseNet121

# CheXNet's output order (Rajpurkar et al. 2017; ChestX-ray14's 14 labels), which the head's rows follow.
LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
DISPLAY_NAMES = {
    "Effusion": "Pleural effusion",
    "Infiltration": "Infiltrate",
    "Edema": "Pulmonary oedema",
    "Emphysema": "Emphysema",
    "Fibrosis": "Pulmonary fibrosis",
    "Pleural_Thickening": "Pleural thickening",
}
# SNOMED CT codes only where the DICOM standard's own code tables (PS3.16, as pydicom ships them) give the
# concept, and give that code no other meaning; the other labels get none rather than a guess. (Those tables
# give Cardiomegaly's 287272002 a second meaning, so it has none here.)
SNOMED_CODES = {
    "Effusion": ("60046008", "Pleural effusion"),
    "Mass": ("4147007", "Mass"),
    "Nodule": ("27925004", "Nodule"),
    "Pneumothorax": ("36118008", "Pneumothorax"),
    "Edema": ("19242006", "Pulmonary edema"),
    "Fibrosis": ("112674009", "Fibrosis"),
}
# No operating points were published with the checkpoint. 0.5 is where a sigmoid trained with binary cross
# entropy calls a finding more likely than not; a site replaces it after validating on its own population.
DEFAULT_THRESHOLD = 0.5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224

# jrzech/reproduce-chexnet pretrained/checkpoint (BSD-3-Clause): git's hash of it, as the repository lists it.
REFERENCE_GIT_BLOB_SHA1 = "637c09c2e4295febb266679b18036db052c40f79"
WEIGHTS_NAME = "weights.pt"
MODULE = "inference.models.densenet:DenseNet121"

# Every class a pickled torchvision DenseNet-121 (0.2 to today) names, possibly inside DataParallel.
PICKLED_MODULE_CLASSES = (
    "torchvision.models.densenet.DenseNet",
    "torchvision.models.densenet._DenseBlock",
    "torchvision.models.densenet._DenseLayer",
    "torchvision.models.densenet._Transition",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleDict",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.Sigmoid",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.pooling.AvgPool2d",
    "torch.nn.modules.linear.Linear",
    "torch.nn.parallel.data_parallel.DataParallel",
)


class CheckpointError(Exception):
    """A checkpoint that is refused: wrong hash, not loadable safely, or not a DenseNet-121."""


class PickledModule:
    """Stands in for every module class of a pickled model: the unpickler fills its ``__dict__`` (the
    module's ``_parameters``, ``_buffers`` and ``_modules``) and nothing else; it has no behaviour to run."""

    dump_patches = False  # read by torch.load for pre-1.6 files: never write a patch file


def git_blob_sha1(data: bytes) -> str:
    """The hash git gives a file's content, so a checkpoint can be checked against a repository listing."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def read_checkpoint(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A verified checkpoint of any published layout as a ``DenseNet121`` state dict.

    Without ``sha256`` only the reference checkpoint (by its git blob hash) is accepted.
    """
    data = path.read_bytes()  # read once: the bytes that are hashed are the bytes that are loaded
    verify(data, sha256)
    return to_densenet_state_dict(tensors_of(_restricted_load(data)))


def verify(data: bytes, sha256: str | None = None) -> None:
    """Raise unless ``data`` is the reference checkpoint, or has the ``sha256`` its caller vouches for."""
    if sha256 is None:
        kind, expected, actual = "git blob sha1", REFERENCE_GIT_BLOB_SHA1, git_blob_sha1(data)
    else:
        kind, expected, actual = "sha256", sha256.strip().lower(), hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected):
        raise CheckpointError(
            f"checkpoint {kind} is {actual}, expected {expected}; refusing to unpickle it"
            + (" (pass --sha256 to vouch for another file)" if sha256 is None else "")
        )


def _allowed_globals() -> dict[str, Any]:
    # The callables and classes a checkpoint may name, and nothing else: tensor rebuilding, ordered dicts,
    # and stand-ins for the module classes. Storage classes are resolved by torch.load itself.
    allowed: dict[str, Any] = {name: PickledModule for name in PICKLED_MODULE_CLASSES}
    allowed |= {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,  # a module's _non_persistent_buffers_set
        "__builtin__.set": set,  # the same, as pickle protocol 2 spells it
        "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        # PyTorch 0.3/0.4 modules pickle their backend as a call to this; today it returns None
        "torch.nn.backends.thnn._get_thnn_function_backend": thnn._get_thnn_function_backend,
    }
    return allowed


_PICKLE_BUILD: Any = pickle._Unpickler.dispatch[pickle.BUILD[0]]


class _RestrictedUnpickler(pickle._Unpickler):
    """Python's documented way to restrict unpickling (every global goes through ``find_class``), plus a
    restricted BUILD: it may fill in a module stand-in, a tensor or an ordered dict, never a class or a
    function. Otherwise a pickle could set ``PickledModule.dump_patches`` and ``__name__``, which torch.load
    reads for pre-1.6 files to decide whether, and where, to write a patch file."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)
    stack: list[Any]  # the pure-Python unpickler's stack (typeshed leaves it out)

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_globals().get(f"{module}.{name}")
        if found is None:
            raise pickle.UnpicklingError(f"the checkpoint names {module}.{name}, which is not allowed")
        return found

    def _restricted_build(self) -> None:
        target = self.stack[-2]  # BUILD pops the state, then sets it on the object below
        if not isinstance(target, (PickledModule, torch.Tensor, collections.OrderedDict)):
            raise pickle.UnpicklingError(f"the checkpoint sets the state of {target!r}, which is not allowed")
        _PICKLE_BUILD(self)

    dispatch[pickle.BUILD[0]] = _restricted_build


def _restricted_pickle_module() -> types.ModuleType:
    # torch.load(pickle_module=...) subclasses ``Unpickler`` and calls ``load``: both stay restricted.
    module = types.ModuleType("openaim_restricted_pickle")
    module.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]
    return module


def _restricted_load(data: bytes) -> Any:
    # A whole pickled model needs more than torch's weights_only unpickler allows: pre-1.6 files record each
    # module class (with its source) as a persistent id, which weights_only refuses outright.
    if zipfile.is_zipfile(io.BytesIO(data)):
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        if any(name.endswith("constants.pkl") for name in names):  # torch.load would hand it to torch.jit
            raise CheckpointError("a TorchScript archive, not a checkpoint")
    try:
        with warnings.catch_warnings():
            # the saved source of each module class is compared with PickledModule's: of course it differs
            warnings.simplefilter("ignore", torch.serialization.SourceChangeWarning)
            return torch.load(
                io.BytesIO(data),
                map_location="cpu",
                pickle_module=_restricted_pickle_module(),
                weights_only=False,  # safe here: verified bytes, and the unpickler above, not pickle's
            )
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, AttributeError, TypeError) as error:
        raise CheckpointError(f"checkpoint cannot be loaded safely: {error}") from None


def tensors_of(loaded: Any) -> dict[str, torch.Tensor]:
    """The named tensors in a loaded checkpoint, under the names it uses."""
    if isinstance(loaded, PickledModule):
        return dict(_module_tensors(loaded, ""))
    if isinstance(loaded, Mapping):
        if loaded and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
            return dict(loaded)
        for wrapper in ("state_dict", "model"):  # {'state_dict': ...} (format c), {'model': ...} (format d)
            if wrapper in loaded:
                return tensors_of(loaded[wrapper])
    raise CheckpointError(
        f"checkpoint holds neither a state dict nor a pickled model ({type(loaded).__name__})"
    )


def _module_tensors(module: PickledModule, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    # What torch.nn.Module.state_dict() does, read from the pickled attributes instead of a live module.
    attributes = vars(module)
    for group in ("_parameters", "_buffers"):
        for name, value in attributes.get(group, {}).items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{prefix}{name}: a {type(value).__name__}, not a tensor")
            yield prefix + name, value.detach()
    for name, child in attributes.get("_modules", {}).items():
        if child is None:
            continue
        if not isinstance(child, PickledModule):
            raise CheckpointError(f"{prefix}{name}: a {type(child).__name__}, not a module")
        yield from _module_tensors(child, f"{prefix}{name}.")


_WRAPPER_PREFIXES = ("module.", "densenet121.")
_OLD_LAYER_PART = re.compile(r"\.(norm|relu|conv)\.([12])\.")


def torchvision_name(name: str) -> str:
    """Any published layout's key to today's torchvision name (``module.densenet121.`` prefixes dropped,
    ``norm.1`` to ``norm1``, ``classifier.0`` to ``classifier``)."""
    while name.startswith(_WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    name = _OLD_LAYER_PART.sub(r".\1\2.", name)
    if name.startswith("classifier.0."):
        name = "classifier." + name.removeprefix("classifier.0.")
    return name


def to_densenet_state_dict(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renamed, completed (``num_batches_tracked``) and checked key by key against ``DenseNet121``."""
    renamed: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        new_name = torchvision_name(name)
        if new_name in renamed:
            raise CheckpointError(f"{name}: two keys become {new_name}")
        renamed[new_name] = value
    for name in [key for key in renamed if key.endswith(".running_mean")]:
        # absent before PyTorch 0.4.1; only used when training with momentum=None
        renamed.setdefault(name.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0))
    head = renamed.get("classifier.weight")
    if head is None or head.ndim != 2:
        raise CheckpointError("checkpoint has no classifier.weight (or classifier.0.weight) matrix")
    with torch.device("meta"):  # shapes and dtypes without allocating a model
        expected = DenseNet121(num_classes=head.shape[0]).state_dict()
    _check_keys(renamed, expected)
    return {name: renamed[name].to(dtype=like.dtype).contiguous() for name, like in expected.items()}


def _check_keys(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    problems = [f"missing {name}" for name in expected if name not in actual]
    problems += [f"unexpected {name}" for name in actual if name not in expected]
    problems += [
        f"{name}: shape {tuple(actual[name].shape)}, DenseNet-121 has {tuple(like.shape)}"
        for name, like in expected.items()
        if name in actual and actual[name].shape != like.shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"not a DenseNet-121 checkpoint: {shown}")


def device_uid(weights_sha256: str) -> str:
    """A DICOM UID under 2.25 (128-bit numbers) taken from the weights' hash: new weights, new UID."""
    return "2.25." + str(int(weights_sha256[:32], 16))


def chexnet_manifest(weights_sha256: str) -> dict[str, Any]:
    """The platform manifest for a CheXNet state dict whose file has ``weights_sha256``."""
    outputs: list[dict[str, Any]] = []
    for label in LABELS:
        output: dict[str, Any] = {
            "label": label,
            "display_name": DISPLAY_NAMES.get(label, label),
            "threshold": DEFAULT_THRESHOLD,
        }
        if label in SNOMED_CODES:
            value, meaning = SNOMED_CODES[label]
            output["code"] = {"value": value, "scheme": "SCT", "meaning": meaning}
        outputs.append(output)
    return {
        "id": "reproduce-chexnet.densenet121",
        "name": "CheXNet reproduction (DenseNet-121, 14 chest X-ray findings)",
        "vendor": "J. Zech, reproduce-chexnet (BSD-3-Clause); packaged by openaim",
        "version": "1.0.0",
        "intended_use": (
            "Research: estimates the probability of each of the 14 NIH ChestX-ray14 findings on a frontal "
            "(PA or AP) chest radiograph, shown to a reader as a second opinion. Not for diagnosis."
        ),
        "contraindications": [
            "Lateral or oblique views",
            "Images other than chest radiographs",
            "Populations unlike the NIH Clinical Center's (e.g. children) without local validation",
        ],
        "regulatory": {
            "status": "research_use_only",
            "statement": "For research use only. Not for use in diagnostic procedures.",
        },
        "training_data": (
            "NIH ChestX-ray14 (Wang X. et al., CVPR 2017): frontal chest radiographs from the NIH Clinical "
            "Center, 8-bit PNG, with 14 labels text-mined from reports (noisy). Trained by "
            "jrzech/reproduce-chexnet from ImageNet weights."
        ),
        "outputs": outputs,
        "triage": [{"label": "Pneumothorax", "priority": "urgent"}],
        "selectors": [
            {"keyword": "Modality", "values": ["CR", "DX"]},
            {"keyword": "BodyPartExamined", "values": ["CHEST"]},
            {"keyword": "ViewPosition", "values": ["PA", "AP"]},
        ],
        "preprocessing": {
            "input_size": INPUT_SIZE,
            "channels": 3,
            "resize": "resize_short_crop_center",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "runtime": {
            "kind": "state_dict",
            "weights": WEIGHTS_NAME,
            "module": MODULE,
            "kwargs": {"num_classes": len(LABELS)},
        },
        "weights_sha256": weights_sha256,
        "device_uid": device_uid(weights_sha256),
    }


def write_package(checkpoint: Path, out_dir: Path, sha256: str | None = None) -> Manifest:
    """Convert a verified checkpoint into ``out_dir`` (new or empty): ``weights.pt`` and ``manifest.json``."""
    state = read_checkpoint(checkpoint, sha256)
    if state["classifier.weight"].shape[0] != len(LABELS):
        raise CheckpointError(
            f"the checkpoint has {state['classifier.weight'].shape[0]} outputs; CheXNet has {len(LABELS)}"
        )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CheckpointError(f"{out_dir}: not empty; the package is written into a new or empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_NAME
    torch.save(state, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    manifest = chexnet_manifest(digest)
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return load_manifest(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference.models.chexnet",
        description="Convert a published CheXNet checkpoint into an openaim state-dict model package.",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--sha256",
        help="the file's sha256, for a checkpoint other than jrzech/reproduce-chexnet pretrained/checkpoint",
    )
    args = parser.parse_args(argv)
    try:
        manifest = write_package(args.checkpoint, args.out_dir, args.sha256)
    except (CheckpointError, PackageError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir / WEIGHTS_NAME} (sha256 {manifest.weights_sha256})")
    print(f"wrote {args.out_dir / MANIFEST_NAME} (device UID {manifest.device_uid})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
