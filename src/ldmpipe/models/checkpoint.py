"""Model weights as safetensors with the constructor's config in the metadata.

Loading never unpickles anything: the config is JSON, the tensors are raw bytes.  A file whose
tensors do not fit the config is refused with an error that names the file and the config.

A diffusion checkpoint may carry a second set of weights for the same network under ``guide/``: the
guide of autoguidance (an earlier EMA snapshot of the same run), read by `load_guide`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from ..io import ArtifactError, atomic_path, pack_metadata, unpack_metadata

M = TypeVar("M", bound=nn.Module)


GUIDE = "guide/"  # the prefix of the guide's tensors


def save_model(model: nn.Module, path: str | Path, extra: dict | None = None, guide: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model.state_dict()`` and ``model.config`` (plus ``extra`` metadata) atomically; ``guide``,
    a state dict of the same network, goes beside the weights under ``guide/``."""
    from safetensors.torch import save_file

    if guide is not None and guide.keys() != model.state_dict().keys():
        raise ValueError("the guide's state dict must have the model's keys")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    state.update({GUIDE + k: v.detach().to("cpu").contiguous() for k, v in (guide or {}).items()})
    meta = {"class": type(model).__name__, "config": model.config, "extra": extra or {}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=pack_metadata(meta))


def load_model(
    cls: type[M] | tuple[type[M], ...], path: str | Path, device: torch.device | str = "cpu"
) -> tuple[M, dict]:
    """Build ``cls(**config)`` from the file's metadata and load its weights; return (model, extra).

    ``cls`` may be a tuple of classes: the one named in the file's metadata is built, any other
    class name is refused (never looked up elsewhere).
    """
    path, classes = Path(path), cls if isinstance(cls, tuple) else (cls,)
    meta, state = _read(path, lambda k: not k.startswith(GUIDE))
    return _build(classes, path, meta, state, device)


def load_guide(cls: type[M], path: str | Path, device: torch.device | str = "cpu") -> M | None:
    """The guide network stored beside a checkpoint's weights (``save_model(..., guide=...)``), or None
    if the file has none."""
    path = Path(path)
    meta, state = _read(path, lambda k: k.startswith(GUIDE))
    guide = {k[len(GUIDE) :]: v for k, v in state.items()}
    return _build((cls,), path, meta, guide, device)[0] if guide else None


def _read(path: Path, wanted: Callable[[str], bool]) -> tuple[dict, dict[str, torch.Tensor]]:
    """The file's metadata and the tensors whose names ``wanted`` accepts (the others are never read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return unpack_metadata(f.metadata()), {k: f.get_tensor(k) for k in f.keys() if wanted(k)}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: checkpoint not found") from None
    except Exception as e:
        raise ArtifactError(f"{path}: not a readable safetensors checkpoint ({e})") from None


def _build(classes: tuple[type[M], ...], path: Path, meta: dict, state: dict, device) -> tuple[M, dict]:
    known = {c.__name__: c for c in classes}
    if meta.get("class") not in known or "config" not in meta:
        names = list(known)
        expected = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        article = "an" if expected[0] in "AEIO" else "a"  # a UNet
        raise ArtifactError(f"{path}: expected {article} {expected} checkpoint, found {meta.get('class', 'no class')!r}")
    cls, config = known[meta["class"]], meta["config"]
    try:
        model = cls(**config)
    except (TypeError, ValueError) as e:  # an unknown key, or a value the class refuses
        raise ArtifactError(f"{path}: its config does not build a {cls.__name__} ({config}): {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        first = first if len(first) <= 200 else first[:200] + " ..."  # key lists run to hundreds of names
        raise ArtifactError(f"{path}: weights do not match {cls.__name__}({config}): {first}") from None
    return model.to(device).eval(), meta["extra"]
