"""checkpoint=: torch and safetensors files, and messages that list what does not fit."""

import json

import pytest
import torch

from exporter.build.checkpoint import load_checkpoint
from exporter.errors import ConfigError
from exporter.models import SimpleCNN


def test_loads_torch_and_safetensors_files(tmp_path):
    from safetensors.torch import save_file

    source = SimpleCNN()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "w.safetensors"):
        target = SimpleCNN()
        info = load_checkpoint(target, tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
        assert len(info["sha256"]) == 64


def test_unwraps_a_lightning_style_state_dict(tmp_path):
    torch.manual_seed(1)
    source = SimpleCNN()
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    torch.manual_seed(2)
    target = SimpleCNN()
    assert not torch.equal(target.state_dict()["classifier.3.weight"], source.state_dict()["classifier.3.weight"])
    info = load_checkpoint(target, tmp_path / "ckpt.pt")
    # every weight comes from the checkpoint's "state_dict", none is left as initialized
    assert source.state_dict().keys() == target.state_dict().keys()
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
    assert len(info["sha256"]) == 64


def test_lists_missing_unexpected_and_mismatched_keys(tmp_path):
    state = SimpleCNN().state_dict()
    del state["classifier.3.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["classifier.3.weight"] = torch.zeros(5, 64)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ConfigError) as info:
        load_checkpoint(SimpleCNN(), tmp_path / "bad.pt")
    message = str(info.value)
    assert "missing keys (1): classifier.3.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "classifier.3.weight: checkpoint [5, 64] vs model [10, 64]" in message


def test_refuses_pickled_code_and_missing_files(tmp_path):
    torch.save({"model": SimpleCNN()}, tmp_path / "pickled.pt")  # a whole module, not a state dict
    with pytest.raises(ConfigError, match=r"pickled.pt is a pickle the tool will not load \(it would call "
                                          r"exporter.models.simple_cnn.SimpleCNN\)"):
        load_checkpoint(SimpleCNN(), tmp_path / "pickled.pt")
    with pytest.raises(ConfigError, match="file not found"):
        load_checkpoint(SimpleCNN(), tmp_path / "absent.pt")


def test_cli_checkpoint_is_loaded_and_hashed(tmp_path, cli):
    import hashlib

    torch.manual_seed(123)
    model = SimpleCNN(num_classes=10)
    torch.save(model.state_dict(), tmp_path / "trained.pth")
    r = cli(f"checkpoint={tmp_path / 'trained.pth'}", "format=pytorch", "hydra.run.dir=out",
            "task_spec.input_schema.image_size=[3,32,32]")
    assert r.returncode == 0, r.stdout + r.stderr
    md = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert md["checkpoint"]["sha256"] == hashlib.sha256((tmp_path / "trained.pth").read_bytes()).hexdigest()
    saved = torch.load(tmp_path / "out" / "model.pth", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_cli_checkpoint_mismatch_is_one_clear_message(tmp_path, cli):
    torch.save(SimpleCNN(num_classes=3).state_dict(), tmp_path / "three.pth")
    r = cli(f"checkpoint={tmp_path / 'three.pth'}", "hydra.run.dir=out")
    assert r.returncode != 0
    assert "shape mismatches (2)" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "out" / "model.onnx").exists()
