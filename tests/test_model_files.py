"""Model files (issue 17): checksum, damaged bytes, edited config, NaN weights, clean errors, shipped model."""
import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ase_etgnn import ModelFileError, load_model, save_model
from ase_etgnn.model_file import FORMAT_VERSION, read_model_metadata, upgrade_model_file

from conftest import predict, small_model

ROOT = Path(__file__).resolve().parent.parent


def _payload(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return a.config == b.config and sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def _largest_tensor_bytes(model):
    name, t = max(model.state_dict().items(), key=lambda kv: kv[1].numel())
    return name, t.detach().contiguous().numpy().tobytes()


def test_file_records_a_checksum_and_is_readable_by_others(tmp_path, model64):
    old = os.umask(0o022)
    try:
        p = save_model(model64, tmp_path / "m.pt")
    finally:
        os.umask(old)
    payload = _payload(p)
    assert payload["format_version"] == FORMAT_VERSION == 2 and payload["checksum"].startswith("sha256:")
    assert p.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    os.chmod(p, 0o640)
    save_model(model64, p)  # replacing keeps the file's mode
    assert p.stat().st_mode & 0o777 == 0o640
    assert _same_model(load_model(p), model64)


def test_two_flipped_bytes_in_the_weights_are_detected(tmp_path, model64):
    p = save_model(model64, tmp_path / "m.pt")
    raw = bytearray(p.read_bytes())
    name, weights = _largest_tensor_bytes(model64)
    at = raw.find(weights)
    assert at > 0 and raw.find(weights, at + 1) < 0  # stored uncompressed, once
    for k in (at + len(weights) // 3, at + len(weights) // 2):
        raw[k] ^= 0x10
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match=r"flipped\.pt: checksum mismatch"):
        load_model(bad)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        read_model_metadata(bad)


def test_two_flipped_bytes_anywhere_never_load_a_different_model(tmp_path):
    """Anywhere in the file: either a ModelFileError naming the file, or exactly the saved model
    (zip padding and unread header fields carry no content)."""
    model = small_model(hidden=8, triplet_hidden=8, int_emb=4, basis_emb=2, out_emb=8)
    p = save_model(model, tmp_path / "m.pt", metadata={"note": "x"})
    raw = p.read_bytes()
    n_refused = 0
    for k in np.linspace(0, len(raw) - 2, 61).astype(int):
        b = bytearray(raw)
        b[k] ^= 0x04
        b[k + 1] ^= 0x40
        q = tmp_path / f"flip{k}.pt"
        q.write_bytes(bytes(b))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                m = load_model(q)
        except ModelFileError as exc:
            assert q.name in str(exc) and "weights_only" not in str(exc)
            n_refused += 1
        else:
            assert _same_model(m, model) and m.metadata == {"note": "x"}, k
    assert n_refused > 40


def test_edited_config_is_detected(tmp_path, model64):
    """An edited cutoff in the file's JSON used to load and change every result."""
    p = save_model(model64, tmp_path / "m.pt")
    assert model64.config.cutoff == 4.0
    raw = p.read_bytes()
    assert raw.count(b'"cutoff": 4.0') == 1
    edited = tmp_path / "edited.pt"
    edited.write_bytes(raw.replace(b'"cutoff": 4.0', b'"cutoff": 5.0'))  # same length: the zip stays valid
    with pytest.raises(ModelFileError, match=r"edited\.pt: checksum mismatch.*edited config"):
        load_model(edited)
    # the same edit through torch (a re-saved, valid zip with the old checksum)
    payload = _payload(p)
    payload["config_json"] = payload["config_json"].replace('"cutoff": 4.0', '"cutoff": 5.0')
    torch.save(payload, tmp_path / "resaved.pt")
    with pytest.raises(ModelFileError, match="resaved.pt: checksum mismatch"):
        load_model(tmp_path / "resaved.pt")
    # removing the checksum of a version 2 file is refused too
    del payload["checksum"]
    torch.save(payload, tmp_path / "stripped.pt")
    with pytest.raises(ModelFileError, match="stripped.pt: format version 2 requires a checksum"):
        load_model(tmp_path / "stripped.pt")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_or_inf_weights_are_refused_naming_the_parameter(tmp_path, model64, value):
    """NaN weights used to give NaN energies and forces with no error."""
    from ase_etgnn.model_file import _payload_checksum

    p = save_model(model64, tmp_path / "m.pt")
    payload = _payload(p)
    name = sorted(k for k, v in payload["state_dict"].items() if v.is_floating_point())[3]
    payload["state_dict"][name].view(-1)[5] = value
    payload["checksum"] = _payload_checksum(payload)  # a consistent file written from a diverged run
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(ModelFileError, match=rf"nan\.pt: parameter '{name}' has 1 NaN/inf values"):
        load_model(tmp_path / "nan.pt")
    # and such a model is never written
    broken = load_model(p)
    with torch.no_grad():
        dict(broken.named_parameters())[name].view(-1)[5] = value
    with pytest.raises(ValueError, match=rf"refusing to save .*never\.pt: parameter '{name}'"):
        save_model(broken, tmp_path / "never.pt")
    assert not (tmp_path / "never.pt").exists() and len(list(tmp_path.iterdir())) == 2


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_load_errors_never_advise_weights_only_false(tmp_path, monkeypatch, model64):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "ase_etgnn-model", "evil": _Evil()}, tmp_path / "evil.pt")
    good = save_model(model64, tmp_path / "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.pt").write_text("hello")
    with zipfile.ZipFile(tmp_path / "junk.pt", "w") as z:  # a zip, but not torch's
        z.writestr("a/data.pkl", b"\x80\x02}q\x00.")
    for name in ("evil.pt", "trunc.pt", "text.pt", "junk.pt"):
        with pytest.raises(ModelFileError, match=name) as err:
            load_model(tmp_path / name)
        msg = str(err.value)
        assert "weights_only=False" not in msg and "weights_only" not in msg and "safe_globals" not in msg, msg
        assert "\n" not in msg
    with pytest.raises(ModelFileError, match=r"evil\.pt.*objects other than tensors.*never loads those"):
        load_model(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()


def test_version_1_files_load_with_a_warning_and_upgrade_exactly(tmp_path, quartz_perturbed, model64):
    p = save_model(model64, tmp_path / "m.pt", metadata={"run": 1})
    payload = _payload(p)
    del payload["checksum"]
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    with pytest.warns(UserWarning, match=r"v1\.pt has model format version 1, without a checksum"):
        old = load_model(tmp_path / "v1.pt")
    assert _same_model(old, model64)
    out = upgrade_model_file(tmp_path / "v1.pt", tmp_path / "v2.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = load_model(out)
    assert _payload(out)["format_version"] == 2 and _same_model(new, model64) and new.metadata == {"run": 1}
    for k, v in predict(old, [quartz_perturbed]).items():
        assert np.array_equal(predict(new, [quartz_perturbed])[k], v)


def test_saving_through_a_symlink_writes_the_target(tmp_path, model64):
    target = tmp_path / "real" / "m.pt"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.pt"
    link.symlink_to(target)
    assert save_model(model64, link) == link
    assert link.is_symlink() and _same_model(load_model(target), model64)


def test_shipped_model_is_checksummed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta = read_model_metadata(ROOT / "models" / "sio2.pt")
    assert meta["format_version"] == 2 and meta["config"]["cutoff"] == 6.0
    assert _payload(ROOT / "models" / "sio2.pt")["checksum"].startswith("sha256:")
