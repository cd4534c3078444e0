"""Builds with an identity: build keys, up-to-date skips, sweeps that never lose a job, summaries on
disk under any launcher, verify, and diffs for pull requests. Real processes throughout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HEAVY, run_cli, run_cli_noting_imports

SMALL = "task_spec.input_schema.image_size=[3,32,32]"
QUICK = ["quantization.latency_runs=2", "calibration.num_samples=4", "calibration.heldout_samples=2"]


def metadata(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text())


def test_a_sweep_over_a_non_choice_value_keeps_every_build(tmp_path, cli):
    r = cli("-m", "format.onnx.opset=13,14,17", SMALL)
    assert r.returncode == 0, r.stdout + r.stderr
    builds = {p.parent.name: metadata(p.parent)["opset"] for p in (tmp_path / "exports/simple_cnn").glob("*/metadata.json")}
    assert builds == {"onnx-none@onnx.opset=13": 13, "onnx-none@onnx.opset=14": 14, "onnx-none@onnx.opset=17": 17}
    summary = json.loads((tmp_path / "exports/sweep_summary.json").read_text())
    assert summary["jobs"] == 3 and summary["failed"] == 0
    assert summary["shared_overrides"] == [SMALL]
    record = summary["records"][0]
    assert set(record["artifacts"]["onnx"]) >= {"bytes", "export_seconds", "max_abs_diff", "size_ratio",
                                                "agreement", "latency_ratio"}
    md = (tmp_path / "exports/sweep_summary.md").read_text()
    assert "| job " in md and "max \\|diff\\|" in md and "latency vs fp32" in md
    # the printed table carries the same columns
    assert "size vs fp32  agreement  latency vs fp32" in r.stdout
    try:
        import matplotlib  # noqa: F401 - the plot extra
    except ImportError:
        return
    assert (tmp_path / "exports/sweep_summary.png").stat().st_size > 1000


def test_options_of_one_format_in_a_cross_format_sweep(tmp_path, cli):
    r = cli("-m", "format=onnx,torchscript", "format.onnx.opset=17", SMALL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert metadata(tmp_path / "exports/simple_cnn/onnx-none")["opset"] == 17
    assert (tmp_path / "exports/simple_cnn/torchscript-none/model.torchscript").is_file()
    assert "format.onnx.opset=17 ignored: this job does not build onnx (format=[torchscript])" in r.stdout


def test_a_forced_shared_folder_fails_the_second_job_instead_of_overwriting(tmp_path, cli):
    for attempt in ("first", "again"):  # again: the first job is up to date, the second still refused
        r = cli("-m", "seed=1,2", SMALL, "hydra.sweep.subdir=same")
        assert r.returncode == 1, attempt
        assert "job 1 of this sweep would replace" in r.stdout and "which job 0 of the same sweep" in r.stdout
        assert metadata(tmp_path / "exports/same")["seed"] == 1
        summary = json.loads((tmp_path / "exports/sweep_summary.json").read_text())
        assert [job["status"] for job in summary["records"]] == (["ok", "error"] if attempt == "first"
                                                                   else ["up to date", "error"])


def test_a_sweep_names_its_folders_whatever_order_its_overrides_come_in(tmp_path, cli):
    """A nightly whose command lists the same overrides in another order finds its builds up to date."""
    r = cli("-m", "seed=0,1", "validate.rtol=0.01,0.02", "format=pytorch", SMALL)
    assert r.returncode == 0, r.stdout + r.stderr
    again = cli("-m", "validate.rtol=0.01,0.02", "format=pytorch", SMALL, "seed=0,1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("up to date") >= 4 and "(ok)" not in again.stdout, again.stdout
    folders = sorted(p.parent.name for p in (tmp_path / "exports/simple_cnn").glob("*/metadata.json"))
    assert folders == [f"pytorch-none@seed={s},validate.rtol={r}" for s in (0, 1) for r in ("0.01", "0.02")]


def test_a_sweep_over_dicts_merged_into_the_model_names_a_folder_for_each(tmp_path, cli):
    r = cli("-m", "model={width: 4},{width: 8}", "format=pytorch", SMALL)
    assert r.returncode == 0, r.stdout + r.stderr
    import yaml

    widths = {p.parent.name: yaml.safe_load((p.parent / "config.yaml").read_text())["model"]["width"]
              for p in (tmp_path / "exports/simple_cnn").glob("*/metadata.json")}
    assert widths == {"pytorch-none@model={width:4}": 4, "pytorch-none@model={width:8}": 8}


def test_torchscript_from_a_later_sweep_job_verifies_by_content(tmp_path, cli):
    r = cli("-m", "seed=0,1", "format=torchscript", SMALL)
    assert r.returncode == 0, r.stdout + r.stderr
    later = tmp_path / "exports/simple_cnn/torchscript-none@seed=1"
    assert len(metadata(later)["artifacts"]["torchscript"]["details"]["content_sha256"]) == 64
    r = cli("verify", str(later))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical" in r.stdout and "verified" in r.stdout


def test_damaged_records_and_missing_paths_are_named(tmp_path, cli, golden):
    golden.copy("onnx", tmp_path / "b")
    with open(tmp_path / "b/metadata.json", "a") as f:
        f.write("junk")
    r = cli(SMALL, "hydra.run.dir=b")
    assert r.returncode == 2 and "metadata.json cannot be read as a build record of this tool" in r.stderr
    (tmp_path / "a.yaml").write_text("seed: 0\n")
    r = cli("diff", "a.yaml", "missing.yaml")
    assert r.returncode == 2 and "missing.yaml: no such build folder or config file" in r.stderr


@pytest.mark.slow
def test_a_joblib_sweep_with_a_failing_job_exits_non_zero_with_a_full_summary(tmp_path, cli):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    r = cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "format=pytorch,onnx",
            "quantization=none,static", SMALL, *QUICK)
    assert r.returncode == 1, r.stdout + r.stderr
    summary = json.loads((tmp_path / "exports/sweep_summary.json").read_text())
    assert summary["jobs"] == 4 and summary["failed"] == 1
    failed = [job for job in summary["records"] if job["status"] != "ok"]
    assert "format=pytorch" in failed[0]["overrides"] and "not available for format pytorch" in failed[0]["error"]
    assert "sweep: 4 job(s), 3 ok, 1 failed" in r.stdout
    assert not list((tmp_path / "exports").glob(".sweep-*"))  # the per-job records are folded into the summary


def test_up_to_date_skip_rebuild_on_change_and_force(tmp_path, cli, golden):
    args = [SMALL, "format=onnx", "hydra.run.dir=b"]
    golden.copy("onnx", tmp_path / "b")  # the same build, made by another process in another folder
    first = metadata(tmp_path / "b")
    assert len(first["build_key"]) == 64 and first["build_key_inputs"]["versions"]["torch"]
    # the same build again: nothing to do, and no torch import on the way
    r, imported = run_cli_noting_imports(*args, cwd=tmp_path)
    assert f"up to date: {tmp_path / 'b'}" in r.stdout and not imported & HEAVY, r.stdout + r.stderr
    assert metadata(tmp_path / "b")["exported_at"] == first["exported_at"]
    # a changed value rebuilds, with another key
    r = cli(*args, "seed=1")
    assert r.returncode == 0 and "up to date" not in r.stdout
    assert metadata(tmp_path / "b")["build_key"] != first["build_key"]
    # force rebuilds the same key
    key = metadata(tmp_path / "b")["build_key"]
    r = cli(*args, "seed=1", "force=true")
    assert r.returncode == 0 and "up to date" not in r.stdout
    assert metadata(tmp_path / "b")["build_key"] == key
    # a damaged artifact is not up to date
    (tmp_path / "b/model.onnx").write_bytes(b"broken")
    r = cli(*args, "seed=1")
    assert r.returncode == 0 and "up to date" not in r.stdout
    assert (tmp_path / "b/model.onnx").stat().st_size > 1000


def test_a_changed_checkpoint_with_the_same_path_rebuilds(tmp_path, cli):
    import torch

    from exporter.models import SimpleCNN

    torch.save(SimpleCNN().state_dict(), tmp_path / "w.pt")
    args = [SMALL, "checkpoint=w.pt", "hydra.run.dir=b"]
    assert cli(*args).returncode == 0
    assert "up to date" in cli(*args).stdout
    torch.manual_seed(7)
    torch.save(SimpleCNN().state_dict(), tmp_path / "w.pt")
    r = cli(*args)
    assert r.returncode == 0 and "up to date" not in r.stdout


def test_a_changed_model_source_rebuilds(tmp_path, cli):
    net = ("import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
           "        self.fc = torch.nn.Linear(3 * 8 * 8, 10)\n\n    def forward(self, pixel_values):\n"
           "        return self.fc(pixel_values.flatten(1)){extra}\n")
    (tmp_path / "nets.py").write_text(net.format(extra=""))
    args = ["~model", "+model={_target_: nets.Net}", "task_spec.input_schema.image_size=[3,8,8]", "hydra.run.dir=b"]
    assert cli(*args).returncode == 0
    assert "up to date" in cli(*args).stdout
    (tmp_path / "nets.py").write_text(net.format(extra=" * 2"))
    r = cli(*args)
    assert r.returncode == 0 and "up to date" not in r.stdout
    # a helper module beside it, which the model may import, counts too
    (tmp_path / "layers.py").write_text("SCALE = 3\n")
    r = cli(*args)
    assert r.returncode == 0 and "up to date" not in r.stdout


@pytest.mark.slow
def test_verify_passes_then_fails_after_one_byte_changes(tmp_path, cli):
    assert cli("model=lm_stub", "task_spec.input_schema.max_seq_len=16", "format=[onnx,torchscript,pytorch]",
               "quantization=dynamic", *QUICK, "hydra.run.dir=b").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("verify", str(tmp_path / "b"), cwd=elsewhere)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("identical bytes") == 3 and "bytes compared" in r.stdout
    assert list(elsewhere.iterdir()) == []
    data = bytearray((tmp_path / "b/model.torchscript").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "b/model.torchscript").write_bytes(bytes(data))
    r = run_cli("verify", str(tmp_path / "b"), cwd=elsewhere)
    assert r.returncode == 1 and "model.torchscript MODIFIED" in r.stdout and "verification FAILED" in r.stdout


def test_verify_of_a_python_api_build_says_why_not(tmp_path, cnn_model, vision_spec):
    from exporter import export_model

    export_model(cnn_model, None, vision_spec, tmp_path / "api", formats=["onnx"])
    r = run_cli("verify", str(tmp_path / "api"), cwd=tmp_path)
    assert r.returncode == 2 and "built with the Python API" in r.stderr
    assert "Traceback" not in r.stderr
    assert run_cli("verify", str(tmp_path / "nothing"), cwd=tmp_path).returncode == 2


@pytest.mark.slow
def test_the_python_api_and_the_command_line_give_the_same_torchscript_bytes(tmp_path, cli):
    """The trace's saved debug info no longer depends on who called it."""
    assert cli(SMALL, "format=torchscript", "hydra.run.dir=cli").returncode == 0
    script = (
        "import torch\nfrom exporter import TaskSpec, export_model\nfrom exporter.models import SimpleCNN\n"
        "torch.manual_seed(0)\n"
        "spec = TaskSpec('vision_classification', 'vision', 'vision_classification', {'image_size': [3, 32, 32]},"
        " {'num_classes': 10})\n"
        "export_model(SimpleCNN(num_classes=10), None, spec, 'api', formats=['torchscript'])\n")
    # A fresh process, like the command line's: TorchScript numbers its classes per process.
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "api/model.torchscript").read_bytes() == (tmp_path / "cli/model.torchscript").read_bytes()


def test_diff_in_markdown_and_on_config_files(tmp_path, cli, golden):
    golden.copy("onnx", tmp_path / "a")
    golden.copy("onnx", tmp_path / "b")
    golden.copy("onnx opset 17", tmp_path / "c")  # SMALL, format.onnx.opset=17
    same = cli("diff", "a", "b", "--format", "markdown")
    assert same.returncode == 0 and "**identical**" in same.stdout and "| onnx" in same.stdout
    changed = cli("diff", "a", "c", "--format", "markdown")
    assert changed.returncode == 1 and "**differ**" in changed.stdout
    assert "| `format.onnx.opset` | `14` | `17` |" in changed.stdout
    # two config files, compared without building
    shutil.copy(tmp_path / "a/config.yaml", tmp_path / "a.yaml")
    shutil.copy(tmp_path / "c/config.yaml", tmp_path / "c.yaml")
    r = cli("diff", "a.yaml", "c.yaml")
    assert r.returncode == 1 and "format.onnx.opset: 14 -> 17" in r.stdout and "configs differ" in r.stdout
    r = cli("diff", "a.yaml", "a.yaml", "--format", "markdown")
    assert r.returncode == 0 and "**identical**" in r.stdout
    (tmp_path / "bad.yaml").write_text("a: [")
    r = cli("diff", "a.yaml", "bad.yaml")
    assert r.returncode == 2 and "bad.yaml: not valid YAML" in r.stderr and "Traceback" not in r.stderr


def test_safetensors_rebuild_to_the_same_bytes_in_a_fresh_process(tmp_path, cli):
    # safetensors writes its header from a hash map: the job sorts it, so two builds are identical.
    for name in ("a", "b", "c"):
        assert cli("format=safetensors", f"export_dir={name}").returncode == 0
    assert len({(tmp_path / name / "model.safetensors").read_bytes() for name in ("a", "b", "c")}) == 1
    r = cli("verify", "a")
    assert r.returncode == 0 and "identical bytes" in r.stdout, r.stdout + r.stderr


def test_the_key_computed_beside_the_model_is_the_key_and_its_errors_surface(hydra_config_module, monkeypatch):
    """A job with nothing to be up to date with hashes the model's files on another thread while the
    model is built (exporter.process.child.identity_in_background): the same key as computed first,
    and a failure there is raised where the key is needed, not lost with the thread."""
    from hydra import compose

    import exporter.cli.app  # noqa: F401 - registers the schemas
    from exporter.cli import describe as cli
    from exporter.process import child as job_process

    cfg = compose("config", overrides=[SMALL, "export_dir=out"])  # no Hydra run: no job folder to name
    assert job_process.identity_in_background(cli.checked_config(cfg))() == cli.build_identity(cfg)

    def unreadable(*_args, **_kwargs):
        raise PermissionError("model.safetensors: permission denied")

    monkeypatch.setattr(job_process, "identity_of", unreadable)
    identity = job_process.identity_in_background(cli.checked_config(cfg))
    with pytest.raises(PermissionError, match="permission denied"):
        identity()


def test_a_sweep_suffix_over_64_characters_is_shortened_with_a_hash(tmp_path, cli, monkeypatch):
    """docs/sweeps.md: a suffix over 64 characters is shortened with a hash (here: a sweep over two
    checkpoints with long paths, whose first 55 characters are the same). Each job records its
    sweep in metadata.json (a single run: null, test_a_build_calibrated_on_a_dataset_is_never_up_to_date)."""
    import torch

    from exporter.models import SimpleCNN
    from exporter.records.layout import SWEEP_KEYS_ENV, sweep_suffix

    (tmp_path / "checkpoints").mkdir()
    paths = [f"checkpoints/simple_cnn_trained_for_forty_epochs_on_the_whole_training_set_seed_{i}.pt" for i in (0, 1)]
    for seed, path in enumerate(paths):
        torch.manual_seed(seed)
        torch.save(SimpleCNN().state_dict(), tmp_path / path)
    r = cli("-m", f"checkpoint={','.join(paths)}", "format=pytorch", "task_spec.input_schema.image_size=[3,16,16]")
    assert r.returncode == 0, r.stdout + r.stderr
    monkeypatch.setenv(SWEEP_KEYS_ENV, '["checkpoint"]')
    suffixes = [sweep_suffix([f"checkpoint={path}"]) for path in paths]
    assert [len(s) for s in suffixes] == [65, 65] and suffixes[0] != suffixes[1]  # "@", 55 characters, "-", 8 of a hash
    assert suffixes[0][:56] == suffixes[1][:56] == "@checkpoint=checkpoints_simple_cnn_trained_for_forty_epo"
    folders = sorted(p.parent for p in (tmp_path / "exports/simple_cnn").glob("*/metadata.json"))
    assert [f.name for f in folders] == sorted(f"pytorch-none{s}" for s in suffixes)
    records = [metadata(f) for f in folders]
    assert {md["checkpoint"]["sha256"] for md in records} == {metadata_sha(tmp_path / p) for p in paths}
    assert all(md["sweep"]["id"] and md["sweep"]["job"] in (0, 1) for md in records)
    assert len({md["sweep"]["id"] for md in records}) == 1


def metadata_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


DATA = "import torch\n\ndef batches():\n    for i in range(3):\n        yield {'pixel_values': torch.rand(2, 3, 16, 16)}\n"


def test_a_build_calibrated_on_a_dataset_is_never_up_to_date(tmp_path, cli):
    """docs/sweeps.md: a calibration dataset cannot be hashed before it runs: the same command
    rebuilds every time (the same build calibrated on random samples is up to date)."""
    (tmp_path / "mydata.py").write_text(DATA)
    common = ["format=pytorch", "quantization=dynamic", "task_spec.input_schema.image_size=[3,16,16]", *QUICK]
    dataset = [*common, "calibration=dataset", "calibration.dataset._target_=mydata.batches", "export_dir=d"]
    assert cli(*dataset).returncode == 0
    first = metadata(tmp_path / "d")
    assert first["calibration"]["source"] == "dataset"
    assert first["sweep"] is None  # docs/configuration.md: null for a single run
    r = cli(*dataset)
    assert r.returncode == 0 and "up to date" not in r.stdout, r.stdout + r.stderr
    assert metadata(tmp_path / "d")["exported_at"] != first["exported_at"]  # built again
    assert cli(*common, "export_dir=r").returncode == 0
    r = cli(*common, "export_dir=r")
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr


NET = ("import torch\n\nSCALE = {scale}\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
       "        super().__init__()\n        self.fc = torch.nn.Linear(3 * 8 * 8, 10)\n"
       "        with torch.no_grad():\n            self.fc.weight.mul_(SCALE)\n\n"
       "    def forward(self, pixel_values):\n        return self.fc(pixel_values.flatten(1))\n")


def test_verify_says_differs_and_exits_1_when_the_rebuild_gives_other_bytes(tmp_path, cli):
    """docs/errors.md: `DIFFERS`, then `verification FAILED` (exit 1): here the model's code changed
    after the build, so its rebuild holds other weights, while the folder still matches its records."""
    (tmp_path / "nets.py").write_text(NET.format(scale=1))
    assert cli("~model", "+model={_target_: nets.Net}", "task_spec.input_schema.image_size=[3,8,8]", "format=pytorch",
               "export_dir=b").returncode == 0
    r = cli("verify", "b")  # your own code is imported only from a folder you name
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stdout + r.stderr
    assert "model._target_ nets.Net" in r.stderr and "verify b --code FOLDER" in r.stderr
    r = cli("verify", "b", "--code", ".")
    assert r.returncode == 0 and "identical bytes" in r.stdout, r.stdout + r.stderr
    assert r.stdout.startswith(f"model code: nets.Net from {tmp_path} (--code)\n"), r.stdout
    (tmp_path / "nets.py").write_text(NET.format(scale=2))
    r = cli("verify", "b", "--code", ".")
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("pytorch "))
    assert row.rstrip().endswith("DIFFERS") and "MODIFIED" not in r.stdout, r.stdout
    assert r.stdout.rstrip().endswith("verification FAILED") and r.stderr == ""
    assert cli("card", "b").returncode == 0  # the folder itself is as recorded
