"""Every command-line error path is one line on stderr, a non-zero exit and no traceback; every
error that docs/errors.md catalogues has a test (the last test here keeps that honest)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SMALL = "task_spec.input_schema.image_size=[3,32,32]"


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_an_override_without_a_key(cli):
    assert "override '=3' has no key" in one_line_error(cli("=3"))


def test_an_option_of_a_format_the_job_does_not_build_is_ignored_and_said(tmp_path, cli):
    r = cli(SMALL, "format=torchscript", "format.onnx.opset=17", "hydra.run.dir=b")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "format.onnx.opset=17 ignored: this job does not build onnx (format=[torchscript])" in r.stdout
    assert sorted(p.name for p in (tmp_path / "b").glob("model.*")) == ["model.torchscript"]
    # logged while the job was composed, before the build was staged: in its export.log all the same
    assert "format.onnx.opset=17 ignored" in (tmp_path / "b" / "export.log").read_text()
    # a typo in an option name still fails, built or not
    assert "Key 'opsett' not in 'OnnxFormatConfig'" in one_line_error(cli("format=torchscript", "format.onnx.opsett=17"))


def test_a_misspelt_key_names_the_valid_keys(cli):
    line = one_line_error(cli("format.onnx.opsett=17"))
    assert "Key 'opsett' not in 'OnnxFormatConfig'; valid keys: enabled, opset, backend" in line


def test_an_unknown_option_lists_the_available_ones(cli):
    assert "Available options in 'quantization': dynamic, fp16, none, static" in one_line_error(cli("quantization=int4"))


def test_a_run_dir_that_is_a_file(tmp_path, cli):
    (tmp_path / "afile").write_text("x")
    assert "cannot write afile: File exists" in one_line_error(cli(SMALL, "hydra.run.dir=afile"))
    assert (tmp_path / "afile").read_text() == "x"


def test_an_export_dir_that_is_a_file(tmp_path, cli):
    (tmp_path / "afile").write_text("x")
    assert "export_dir: " in one_line_error(cli(SMALL, "export_dir=afile"))
    assert (tmp_path / "afile").read_text() == "x"


@pytest.fixture
def read_only_disk(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_build_onto_a_read_only_disk(read_only_disk, cli):
    line = one_line_error(cli(SMALL, f"hydra.run.dir={read_only_disk / 'b'}"))
    assert "Read-only file system" in line


def test_an_empty_checkpoint_names_the_file(tmp_path, cli):
    (tmp_path / "empty.pt").write_bytes(b"")
    line = one_line_error(cli(SMALL, f"checkpoint={tmp_path / 'empty.pt'}", "hydra.run.dir=b"))
    assert f"checkpoint: cannot read {tmp_path / 'empty.pt'} as a state dict" in line
    assert not (tmp_path / "b").exists()


def test_a_language_model_under_a_classification_spec_breaks_the_output_contract(tmp_path, cli):
    line = one_line_error(cli("model=lm_stub", "task_spec=text_classification", "hydra.run.dir=b"))
    assert "task_spec.output_schema.num_classes is 2" in line and "last dimension 1000" in line
    assert "the first exported output (logits)" in line and "task_spec.outputs=[...]" in line
    assert not (tmp_path / "b").exists()


FEATURES_FIRST = '''
import torch


class FeaturesFirst(torch.nn.Module):
    """Returns (features, logits): the shipped adapter would pick the features."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
        self.head = torch.nn.Linear(16, 10)

    def forward(self, pixel_values):
        features = self.body(pixel_values)
        return features, self.head(features)


class AllNaN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 10)

    def forward(self, pixel_values):
        return self.fc(pixel_values.flatten(1)) * float("nan")
'''


def test_features_exported_as_logits_break_the_output_contract(tmp_path, cli):
    (tmp_path / "nets.py").write_text(FEATURES_FIRST)
    # A tuple of two tensors is not silently cut to its first: the job names both.
    line = one_line_error(cli("~model", "+model={_target_: nets.FeaturesFirst}",
                              "task_spec.input_schema.image_size=[3,8,8]", "hydra.run.dir=b"))
    assert "the model returns output_0 float32[1, 16], output_1 float32[1, 10]" in line
    # Choosing the features as the exported output breaks the task spec's contract, naming both shapes.
    line = one_line_error(cli("~model", "+model={_target_: nets.FeaturesFirst}", "task_spec.outputs=[output_0]",
                              "task_spec.input_schema.image_size=[3,8,8]", "hydra.run.dir=b"))
    assert "num_classes is 10" in line and "last dimension 16" in line
    assert "a tuple of (float32[1, 16], float32[1, 10])" in line


def test_an_all_nan_output_fails_unless_allowed(tmp_path, cli):
    (tmp_path / "nets.py").write_text(FEATURES_FIRST)
    args = ["~model", "+model={_target_: nets.AllNaN}", "task_spec.input_schema.image_size=[3,8,8]",
            "format=[onnx,torchscript]", "hydra.run.dir=b"]
    line = one_line_error(cli(*args))
    assert "holds 10 non-finite value(s)" in line and "validate.allow_nonfinite=true" in line
    r = cli(*args, "validate.allow_nonfinite=true")
    assert r.returncode == 0, r.stdout + r.stderr


def test_non_finite_artifact_outputs_fail_the_check():
    import numpy as np

    from exporter.build.compare import Tolerance, compare

    eager = np.ones((1, 4), dtype=np.float32)
    artifact = eager.copy()
    artifact[0, 1] = np.inf
    check = compare("example", {}, eager, artifact, Tolerance(1e-4, 1e-3, gated=True))
    assert not check.within_tolerance and "non-finite values (NaN or inf) in the artifact's output" in check.problem
    both = np.full((1, 4), np.nan, dtype=np.float32)
    allowed = compare("example", {}, both, both.copy(), Tolerance(1e-4, 1e-3, gated=True, allow_nonfinite=True))
    assert allowed.within_tolerance


def test_every_catalogued_error_names_a_test_that_exists():
    catalogue = (REPO / "docs" / "errors.md").read_text()
    named = re.findall(r"`(test_[a-z0-9_]+)`", catalogue)
    assert len(named) >= 25
    defined = set()
    for path in Path(REPO / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_[a-z0-9_]+)", path.read_text(), flags=re.M))
    assert sorted(set(named) - defined) == []


def test_torch_onnx_step_messages_end_in_their_cause_not_in_next_steps():
    """torch.onnx's dynamo errors open with 'This is step 1/3 ... Next steps:' and a list of where to
    file issues; the one line keeps the step and says what failed."""
    from exporter.errors import first_line

    try:
        try:
            raise ValueError("unsupported operator aten::linalg_eigvals\nmore lines")
        except ValueError as cause:
            raise RuntimeError("Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of "
                               "exporting the model to ONNX. Next steps:\n- Modify the model code ...") from cause
    except RuntimeError as exc:
        assert first_line(exc, with_type=True) == (
            "RuntimeError: Failed to export the model with torch.export. This is step 1/3 of exporting the model to "
            "ONNX: ValueError: unsupported operator aten::linalg_eigvals")
