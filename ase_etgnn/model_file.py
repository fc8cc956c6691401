"""Model files: a plain dict of tensors + JSON config/metadata + a format version + a checksum.

Loading uses ``torch.load(..., weights_only=True)``, which never executes pickled code. A composed model
(``ase_etgnn.composed``: properties from several member networks) is one file of the same format: its config
holds each member's config and the property routes, its state dict every member's weights.

Integrity (format version 2): ``checksum`` is ``"sha256:<hex>"`` over the format fields, the config,
units and metadata JSON and every tensor (name, dtype, shape, raw bytes). ``load_model`` and
``read_model_metadata`` recompute it and raise ``ModelFileError`` naming the file on any difference, so a
flipped byte in the weights or an edited cutoff in the config is refused. Weights that are NaN or inf
are refused on load (and on save), naming the parameter.

Version 1 files (written before checksums) still load: they have no checksum to verify, so a
``UserWarning`` says so once per load; ``upgrade_model_file`` re-saves one as version 2 with identical
tensors. The shipped ``models/sio2.pt`` is version 2. A version 2 file without a checksum is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Union

import torch

from .composed import ComposedConfig, ComposedModel
from .conventions import atomic_write
from .model import ETGNN, ETGNNConfig, construct
from .properties import PROPERTIES

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ModelFileError",
    "save_model",
    "load_model",
    "read_model_metadata",
    "upgrade_model_file",
]

FORMAT_NAME = "ase_etgnn-model"
FORMAT_VERSION = 2  # 2: sha256 checksum (required); 1: none (still read)
_HASHED_FIELDS = ("format", "format_version", "config_json", "metadata_json", "units_json")


class ModelFileError(ValueError):
    """A file is not a readable ase_etgnn model (corrupt, wrong kind, or a newer format)."""


def _payload_checksum(payload: dict) -> str:
    """``"sha256:<hex>"`` over the JSON fields and every tensor of ``state_dict`` (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for key in _HASHED_FIELDS:
        h.update(json.dumps([key, payload[key]]).encode() + b"\n")
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"state_dict is a {type(state).__name__}, not a dict")
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode() + b"\n")
        flat = t.detach().cpu().contiguous().reshape(-1)  # [numel]
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return "sha256:" + h.hexdigest()


def _non_finite(state: dict) -> Optional[str]:
    """A description of the first floating tensor with NaN or inf values, or None."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                return f"parameter {name!r} has {bad} NaN/inf values (of {t.numel()})"
    return None


def _write_payload(payload: dict, path: Path) -> Path:
    """Add the checksum and write atomically and durably (:func:`~ase_etgnn.conventions.atomic_write`)."""
    payload = {**payload, "format_version": FORMAT_VERSION}
    payload["checksum"] = _payload_checksum(payload)
    Path(os.path.realpath(path)).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))  # a symbolic link is written through, link kept
    return path


def save_model(model: Union[ETGNN, ComposedModel], path: Union[str, os.PathLike],
               metadata: Optional[dict] = None) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + rename). ``metadata`` must be JSON-serialisable.

    The file records the config, weights (float32 unless the model is float64), species, units and
    property list of the heads, the format version, the user's metadata and a sha256 checksum of all
    of them. ``ValueError`` naming the parameter if a weight is NaN or inf (nothing is written).
    """
    path = Path(path)
    try:
        meta_json = json.dumps(metadata or {})
    except TypeError as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    bad = _non_finite(state)
    if bad:
        raise ValueError(f"refusing to save {path}: {bad}")
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config_json": json.dumps(model.config.to_dict()),
        "metadata_json": meta_json,
        "units_json": json.dumps({h: PROPERTIES[h].units for h in model.heads}),
        "state_dict": state,
    }
    return _write_payload(payload, path)


def upgrade_model_file(path: Union[str, os.PathLike], out: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Re-save a (version 1) model file in the current format, with a checksum; tensors, config and
    metadata are copied unchanged (verified by reading the result back). Writes ``out`` (default: in place).
    """
    path = Path(path)
    payload = _read_payload(path, warn_unverified=False)
    out_path = _write_payload({k: v for k, v in payload.items() if k != "checksum"}, Path(out) if out else path)
    back = _read_payload(out_path)
    same = all(back[k] == payload[k] for k in _HASHED_FIELDS if k != "format_version") and back[
        "state_dict"
    ].keys() == payload["state_dict"].keys() and all(
        torch.equal(back["state_dict"][k], v) and back["state_dict"][k].dtype == v.dtype
        for k, v in payload["state_dict"].items()
    )
    if not same:  # pragma: no cover - torch.save/load round trip is exact
        raise ModelFileError(f"{out_path}: re-saved model differs from {path}")
    return out_path


def _torch_reason(exc: Exception) -> str:
    """torch's load error in one line, without its advice to load unsafely (weights_only=False, allowlists)."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\. |\.?\n|$)", text)
    if m:
        return (
            f"it holds Python objects other than tensors and plain data ({m.group(1).strip()}); ase_etgnn "
            "never loads those, since they could run code"
        )
    if "weights_only" in text or isinstance(exc, pickle.UnpicklingError):
        return f"{type(exc).__name__} while reading it (damaged file)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first.split('  (Could this error message be improved?')[0].strip()}"


def _read_payload(path: Union[str, os.PathLike], warn_unverified: bool = True) -> dict:
    """The file's payload dict, format and checksum verified; ``ModelFileError`` naming ``path`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not an ase_etgnn model file: not a torch zip archive (truncated, or another kind of file)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with code, truncated file, ...
        raise ModelFileError(f"{path} is not a readable ase_etgnn model file: {_torch_reason(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not an ase_etgnn model file (no '{FORMAT_NAME}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: missing or invalid format_version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, newer than this ase_etgnn supports ({FORMAT_VERSION}); "
            "upgrade ase_etgnn"
        )
    stored = payload.get("checksum")
    if stored is None and version >= 2:
        raise ModelFileError(f"{path}: format version {version} requires a checksum and the file has none (altered)")
    if stored is not None:
        try:
            actual = _payload_checksum(payload)
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{path}: model file content is invalid ({type(exc).__name__}: {exc})") from None
        if stored != actual:
            raise ModelFileError(
                f"{path}: checksum mismatch (stored {str(stored)[:19]}..., contents {actual[:19]}...): the file was "
                "altered after it was written (damaged copy or disk, or an edited config/weights). Use an intact "
                "copy; to change a model, load it, modify it in Python and save_model it"
            )
    elif warn_unverified:
        warnings.warn(
            f"{path} has model format version 1, without a checksum: damage to it cannot be detected; "
            f"ase_etgnn.model_file.upgrade_model_file({str(path)!r}) re-saves it with one",
            UserWarning,
            stacklevel=3,
        )
    bad = _non_finite(payload["state_dict"]) if isinstance(payload.get("state_dict"), dict) else None
    if bad:
        raise ModelFileError(f"{path}: {bad}; the weights are unusable (diverged training run or a damaged file)")
    return payload


def read_model_metadata(path: Union[str, os.PathLike]) -> dict:
    """Config, units and metadata of a model file without building the network."""
    p = _read_payload(path)
    return {
        "config": json.loads(p["config_json"]),
        "units": json.loads(p["units_json"]),
        "metadata": json.loads(p["metadata_json"]),
        "format_version": p["format_version"],
    }


def load_model(
    path: Union[str, os.PathLike], device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None
) -> Union[ETGNN, ComposedModel]:
    """Load a model written by ``save_model`` (an ``ETGNN``, or a ``ComposedModel`` of several);
    ``ModelFileError`` with the reason if it cannot be read.

    The returned model is in eval mode; ``model.metadata`` holds the file's metadata dict, ``model.checksum``
    its (verified) checksum.
    """
    payload = _read_payload(path)
    try:
        config_dict = json.loads(payload["config_json"])
        metadata = json.loads(payload["metadata_json"])
        if "composed" in config_dict:  # members routed by property (ase_etgnn.composed)
            model = ComposedModel(ComposedConfig.from_dict(config_dict))
        else:
            model = construct(ETGNNConfig.from_dict(config_dict))
        state = payload["state_dict"]
        file_dtype = next(iter(state.values())).dtype if state else torch.float32
        model = model.to(dtype=file_dtype)
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: model file content is invalid ({type(exc).__name__}: {exc})") from None
    model.metadata = metadata
    model.checksum = payload.get("checksum")  # verified above; None for a version-1 file
    model.eval()
    return model.to(device=device or "cpu", dtype=dtype or file_dtype)
