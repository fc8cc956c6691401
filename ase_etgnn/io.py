"""Model files: a plain dict of tensors + JSON config/metadata + a format version.

Loading uses ``torch.load(..., weights_only=True)``, which never executes pickled code.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import torch

from .model import ETGNN, ETGNNConfig, construct
from .properties import PROPERTIES

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "save_model", "load_model", "read_model_metadata"]

FORMAT_NAME = "ase_etgnn-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A file is not a readable ase_etgnn model (corrupt, wrong kind, or a newer format)."""


def save_model(model: ETGNN, path: Union[str, os.PathLike], metadata: Optional[dict] = None) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + rename). ``metadata`` must be JSON-serialisable.

    The file records the config, weights (float32 unless the model is float64), species, units and
    property list of the heads, the format version and the user's metadata.
    """
    path = Path(path)
    try:
        meta_json = json.dumps(metadata or {})
    except TypeError as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config_json": json.dumps(model.config.to_dict()),
        "metadata_json": meta_json,
        "units_json": json.dumps({h: PROPERTIES[h].units for h in model.heads}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _read_payload(path: Union[str, os.PathLike]) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with code, truncated file, ...
        raise ModelFileError(f"{path} is not a readable ase_etgnn model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not an ase_etgnn model file (no '{FORMAT_NAME}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: missing or invalid format_version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, newer than this ase_etgnn supports ({FORMAT_VERSION}); "
            "upgrade ase_etgnn"
        )
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
) -> ETGNN:
    """Load a model written by ``save_model``; ``ModelFileError`` with the reason if it cannot be read.

    The returned model is in eval mode; ``model.metadata`` holds the file's metadata dict.
    """
    payload = _read_payload(path)
    try:
        config = ETGNNConfig.from_dict(json.loads(payload["config_json"]))
        metadata = json.loads(payload["metadata_json"])
        model = construct(config)
        state = payload["state_dict"]
        file_dtype = next(iter(state.values())).dtype if state else torch.float32
        model = model.to(dtype=file_dtype)
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: model file content is invalid ({type(exc).__name__}: {exc})") from None
    model.metadata = metadata
    model.eval()
    return model.to(device=device or "cpu", dtype=dtype or file_dtype)
