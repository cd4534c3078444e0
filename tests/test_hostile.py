"""A build folder or a command line prepared by someone hostile (issue 24): the tool runs no code a
build folder brings, keeps every good build, and answers every case in one line with its exit code."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

EVIL = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n\n\nclass Boom:\n    pass\n"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plant(build: Path, code_folder: Path, marker: Path, cwd: str) -> None:
    """evilmod.py in ``code_folder``, config.yaml pointing at it, and records re-hashed to vouch for it."""
    (code_folder / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    config = yaml.safe_load((build / "config.yaml").read_text())
    config["model"] = {"_target_": "evilmod.Boom"}
    (build / "config.yaml").write_text(yaml.safe_dump(config))
    metadata = json.loads((build / "metadata.json").read_text())
    metadata["config"]["cwd"] = cwd
    if code_folder == build:
        metadata["artifacts"]["onnx"]["extra_files"] = [
            {"file": "evilmod.py", "bytes": (build / "evilmod.py").stat().st_size, "sha256": _sha(build / "evilmod.py")}]
    metadata["records"]["config.yaml"] = _sha(build / "config.yaml")
    (build / "metadata.json").write_text(json.dumps(metadata))


def test_verify_imports_no_code_a_build_folder_brings(tmp_path, golden):
    build = golden.copy("onnx", tmp_path / "b")
    marker = tmp_path / "ran"
    _plant(build, build, marker, ".")
    card = run_cli("card", ".", cwd=build)
    assert card.returncode == 1 and "evilmod.py: not part of the build" in card.stdout + card.stderr
    assert "NOT PART OF THE BUILD: evilmod.py" in card.stdout
    r = run_cli("verify", ".", cwd=build)  # the records list code: nothing of the folder is rebuilt
    assert r.returncode == 1 and "evilmod.py: not part of the build" in r.stdout, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("nothing was rebuilt") and not marker.exists()
    # the same through a config.cwd that names another folder, verified from anywhere
    other = tmp_path / "other"
    other.mkdir()
    build2 = golden.copy("onnx", tmp_path / "b2")
    _plant(build2, other, marker, str(other))
    r = run_cli("verify", str(build2), cwd=other)
    assert r.returncode == 2 and "evilmod.Boom" in r.stderr and not marker.exists(), r.stdout + r.stderr
    # Python's own library is no model code either
    config = yaml.safe_load((build2 / "config.yaml").read_text())
    config["model"] = {"_target_": "os.system", "command": f"touch {marker}"}
    (build2 / "config.yaml").write_text(yaml.safe_dump(config))
    metadata = json.loads((build2 / "metadata.json").read_text())
    metadata["records"]["config.yaml"] = _sha(build2 / "config.yaml")
    (build2 / "metadata.json").write_text(json.dumps(metadata))
    r = run_cli("verify", str(build2), cwd=tmp_path)
    assert r.returncode == 2 and "Python's own 'os' is not model code" in r.stderr and not marker.exists(), r.stderr
    assert list(tmp_path.glob("*/__pycache__")) == []


def test_verify_says_which_model_code_it_imports(golden, tmp_path):
    r = run_cli("verify", str(golden("onnx")), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("model code: exporter.models.SimpleCNN from the installed distribution exporter "), r.stdout
    r = run_cli("verify", str(golden("onnx")), "--code", str(tmp_path / "nope"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: --code ") and r.stderr.count("\n") == 1, r.stderr


LINEAR = ("import torch\n\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
          "        self.fc = torch.nn.Linear(16, 4)\n\n    def forward(self, pixel_values):\n"
          "        return self.fc(pixel_values.flatten(1))\n")
NET_ARGS = ["~model", "+model={_target_: nets.Net}", "task_spec.input_schema.image_size=[1,4,4]",
            "task_spec.output_schema.num_classes=4", "format=[onnx,pytorch]", "format.onnx.backend=legacy",
            "export_dir=exports/good"]  # the legacy exporter alone: NO_ONNX fails without the other's attempt


def test_a_failed_run_never_replaces_a_build_in_which_that_format_was_ok(tmp_path):
    from conftest import NO_ONNX

    (tmp_path / "nets.py").write_text(LINEAR)
    assert run_cli(*NET_ARGS, cwd=tmp_path).returncode == 0
    good, aside = tmp_path / "exports/good", tmp_path / "exports/good.failed"
    before = (good / "metadata.json").read_bytes()
    # the model's code changes and its ONNX export now fails: the good build stays, this run's goes beside it
    (tmp_path / "nets.py").write_text(NO_ONNX.replace("NoOnnx", "Net"))
    r = run_cli(*NET_ARGS, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stdout + r.stderr
    assert r.stderr.startswith("error: a format failed: onnx: ") and "Traceback" not in r.stdout + r.stderr
    assert "\\x1b" not in r.stderr
    assert "exports/good keeps its earlier build, in which onnx was ok; this run's build, in which onnx failed, is in exports/good.failed" \
        in r.stderr, r.stderr
    assert (good / "metadata.json").read_bytes() == before and (good / "model.onnx").is_file()
    assert run_cli("card", str(good), cwd=tmp_path).returncode == 0
    failed = json.loads((aside / "metadata.json").read_text())
    assert failed["status"] == "failed" and not (aside / "model.onnx").exists() and (aside / "model.pth").is_file()
    # the next failure replaces it; the good build still stays
    r = run_cli(*NET_ARGS, "seed=1", cwd=tmp_path)
    assert r.returncode == 1 and (good / "metadata.json").read_bytes() == before
    assert json.loads((aside / "metadata.json").read_text())["seed"] == 1
    assert sorted(p.name for p in (tmp_path / "exports").iterdir() if not p.name.endswith(".stat-cache.json")) == [
        ".good.lock", "good", "good.failed"]
    # a run that builds it again publishes, and the failed result beside it goes
    (tmp_path / "nets.py").write_text(LINEAR)
    r = run_cli(*NET_ARGS, "seed=2", cwd=tmp_path)
    assert r.returncode == 0 and not aside.exists(), r.stdout + r.stderr
    assert json.loads((good / "metadata.json").read_text())["seed"] == 2


def test_impossible_onnx_names_are_refused_before_the_model_loads(tmp_path, golden):
    build = golden.copy("onnx", tmp_path / "exports/good")
    before = (build / "metadata.json").read_bytes()
    for names, said in (("format.onnx.input_names=[logits]", "format.onnx.input_names: ['logits'] would name both"),
                        ("format.onnx.output_names=[a,a]", "format.onnx.output_names: ['a'] given more than once"),
                        ("format.onnx.output_names=[pixel_values]", "format.onnx.output_names: ['pixel_values']")):
        r = run_cli("task_spec.input_schema.image_size=[3,32,32]", "export_dir=exports/good", names, cwd=tmp_path,
                    env={"PYTHONPROFILEIMPORTTIME": "1"})
        lines = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: " + said), r.stderr[-800:]
        assert not any(line.rstrip().endswith(("| torch", "| onnx")) for line in r.stderr.splitlines())
    assert (build / "metadata.json").read_bytes() == before


def _edited(golden, to: Path, change) -> Path:
    build = golden.copy("onnx", to)
    metadata = json.loads((build / "metadata.json").read_text())
    change(metadata)
    (build / "metadata.json").write_text(json.dumps(metadata))
    return build


def test_card_and_diff_on_hand_edited_records_name_the_key(tmp_path, golden):
    import os

    good = golden("onnx")
    cases = {
        "inputs": (lambda md: md.update(inputs="x"), "'inputs' must be a list, got a string"),
        "outputs": (lambda md: md.update(outputs="x"), "'outputs' must be a list, got a string"),
        "validation": (lambda md: md["artifacts"]["onnx"].update(validation="x"),
                       "'artifacts.onnx.validation' must be an object, got a string"),
        "bytes": (lambda md: md["artifacts"]["onnx"].update(bytes=10**400),
                  "'artifacts.onnx.bytes' must be a whole number of bytes below 2**63, got 10000000000000000000..."),
        "parameters": (lambda md: md.update(parameters="many"), "'parameters' must be a whole number, got a string"),
        "load_hint": (lambda md: md["artifacts"]["onnx"].update(load_hint=5),
                      "'artifacts.onnx.load_hint' must be a string, got a number"),
        "io": (lambda md: md.update(inputs=[{"name": 1, "dtype": None, "shape": "x"}]),
               "'inputs' must be a list of objects (name, dtype: strings, shape: a list)"),
        "version": (lambda md: md.update(schema_version="2.0"), "'schema_version' is '2.0'; this version of the tool reads 1.x"),
    }
    for name, (change, said) in cases.items():
        build = _edited(golden, tmp_path / name, change)
        for command in (("card", str(build)), ("diff", str(good), str(build))):
            r = run_cli(*command, cwd=tmp_path)
            assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (name, r.stdout, r.stderr)
            assert said in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a FIFO in place of the artifact: read at once as no file, never waited on
    fifo = golden.copy("onnx", tmp_path / "fifo")
    (fifo / "model.onnx").unlink()
    os.mkfifo(fifo / "model.onnx")
    r = run_cli("card", str(fifo), cwd=tmp_path, timeout=60)
    said = "model.onnx: not a regular file (a FIFO, a device or a folder) in the place of a file the build wrote"
    assert r.returncode == 1 and said in r.stdout, r.stdout + r.stderr
    r = run_cli("diff", str(good), str(fifo), cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and "identical" not in r.stdout.splitlines()[-1], r.stdout


def test_a_dollar_brace_in_a_value_is_text_when_escaped_and_one_line_when_not(tmp_path):
    small = "task_spec.input_schema.image_size=[3,8,8]"
    for args, said in (
            (["task_spec.task_name='a ${x}'"], "error: task_spec.task_name: Interpolation key 'x' not found; a value "
                                               "meant literally escapes it"),
            (["hydra.run.dir='lit${y}'"], "error: hydra.run.dir: Interpolation key 'y' not found; a value meant"),
            (["hydra.run.dir='lit\\${y}'"], "error: hydra.run.dir: a folder name with '${' in it is not supported")):
        r = run_cli(small, "format=pytorch", *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(said), r.stdout + r.stderr
        assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    # escaped, it is the text it says, in the build and in its rebuild
    r = run_cli(small, "format=pytorch", "task_spec.task_name='a \\${x}'", "export_dir='e\\${y}'", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    build = tmp_path / "e${y}"
    assert json.loads((build / "metadata.json").read_text())["task_name"] == "a ${x}"
    r = run_cli("verify", str(build), cwd=tmp_path)
    assert r.returncode == 0 and "identical bytes" in r.stdout, r.stdout + r.stderr


def _shell(command: str, cwd: Path) -> "subprocess.CompletedProcess":
    import os
    import shlex
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "HYDRA_FULL_ERROR")}
    return subprocess.run(["sh", "-c", f"exec {shlex.quote(sys.executable)} -m exporter {command}"], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=240)


def test_closed_or_full_output_is_one_line_for_every_command(tmp_path, golden):
    g = golden("onnx")
    cases = [
        ("validate.atol=-1 >&-", 2, "error: validate.atol: -1.0 is out of range; valid values: >= 0\n"),
        (f"card {g} >&-", 120, "error: cannot write the output: stdout is closed\n"),
        (f"card {g} > /dev/full", 120, "error: cannot write the output: No space left on device\n"),
        (f"diff {g} {g} > /dev/full", 120, "error: cannot write the output: No space left on device\n"),
        ("--help > /dev/full", 120, "error: cannot write the output: No space left on device\n"),
        # builds that differ: the result (1) stays, and the lost output is still said
        (f"diff {g} {golden('pytorch')} > /dev/full", 1, "error: cannot write the output: No space left on device\n"),
        ("--cfg job > /dev/full", 120, "error: cannot write the output: No space left on device\n"),
        ("card nothing-here 2>&- >&-", 2, ""),
        ("task_spec.input_schema.image_size=[3,8,8] format=pytorch export_dir=b >&-", 120,
         "error: cannot write the output: stdout is closed\n"),
    ]
    for command, code, stderr in cases:
        r = _shell(command, tmp_path)
        assert (r.returncode, r.stderr) == (code, stderr), (command, r.returncode, r.stderr)
    # the build with its stdout closed is whole, and its export.log holds the log, not a stray write
    assert run_cli("card", "b", cwd=tmp_path).returncode == 0
    assert "build: " in (tmp_path / "b/export.log").read_text() or "pytorch" in (tmp_path / "b/export.log").read_text()


def test_a_killed_verify_leaves_its_temporary_folder_to_the_next_one(tmp_path, golden):
    import os
    import signal
    import sys

    from conftest import wait_for

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, "TMPDIR": str(scratch)}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "verify", str(golden("onnx"))], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: list(scratch.glob("exporter-verify-*/.lock")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert len(list(scratch.glob("exporter-verify-*"))) == 1  # SIGKILL gives no handler a say
    r = run_cli("verify", str(golden("onnx")), cwd=tmp_path, env={"TMPDIR": str(scratch)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(scratch.iterdir()) == []  # the stale one went, and its own


def test_nothing_is_left_in_the_temporary_folder(tmp_path):
    """ONNX Runtime writes `.ses` into $TMPDIR as it is imported, and torch makes an empty
    `torchinductor_<user>` there: a run removes what was not there before it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (tmp_path / "w").mkdir()
    r = run_cli("-m", "task_spec.input_schema.image_size=[3,8,8]", "format=onnx,pytorch", cwd=tmp_path / "w",
                env={"TMPDIR": str(scratch)})  # a sweep imports ONNX Runtime in its own process too
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(scratch.iterdir()) == [], list(scratch.iterdir())
    (scratch / ".ses").write_text("the user's own\n")  # one that was there before the run stays
    r = run_cli("task_spec.input_schema.image_size=[3,8,8]", "format=onnx", "export_dir=c", cwd=tmp_path / "w",
                env={"TMPDIR": str(scratch)})
    assert r.returncode == 0 and (scratch / ".ses").read_text() != "", r.stderr


def test_input_that_cannot_be_read_is_one_line_naming_it(tmp_path):
    (tmp_path / "bad.npz").write_text("not a zip\n")
    cases = [
        (["+hydra.foo=1"], "error: hydra.foo: Hydra has no such setting to add"),
        (["task_spec.task_namé=1"], "error: override 'task_spec.task_namé=1' cannot be read: a key is an ASCII name"),
        (["task_spec.task_name='abc"], "error: override \"task_spec.task_name='abc\" cannot be read: a quote in the value"),
        (["model.path=~/x"], "error: override 'model.path=~/x' cannot be read: Hydra reads a leading ~ as 'delete this key'"),
        (["checkpoint=/dev/null"], "error: checkpoint: /dev/null is not a regular file"),
        (["format=[onnx"], "error: override 'format=[onnx' cannot be read: a '[' in the value is not closed; did you "
                           "mean 'format=[onnx]'?"),
        (["quantization=static", "calibration=npz", f"calibration.path={tmp_path / 'bad.npz'}"],
         f"error: calibration.path: {tmp_path / 'bad.npz'} is not a .npz archive"),
    ]
    for args, said in cases:
        r = run_cli("task_spec.input_schema.image_size=[3,8,8]", "format=onnx", *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(said), (args, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_an_axis_never_varied_is_not_called_verified(tmp_path):
    """max_seq_len=1: the second example has another batch size but the same length, so the
    sequence axis the graph declares dynamic was never tried at another size. torch.export, which
    cannot bound an axis to [2, 1], keeps the sequence fixed at its one token."""
    r = run_cli("model=lm_stub", "task_spec.input_schema.max_seq_len=1", "format=[onnx,exported_program]",
                "export_dir=b", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    artifacts = json.loads((tmp_path / "b/metadata.json").read_text())["artifacts"]
    for record in artifacts.values():
        assert record["dynamic_axes_verified"] is False and record["status"] == "unchecked", record
        assert "cannot be tried at another length" in record["unchecked"]
    assert artifacts["exported_program"]["details"]["dynamic_shapes"] == {"input_ids": {"0": "batch"}}
    assert artifacts["exported_program"]["dynamic_axes"] == {"input_ids": {"0": "batch"}, "logits": {"0": "batch"}}
    assert "warning: build status unchecked" in r.stderr


def test_a_path_that_cannot_be_a_build_folder_is_one_line(tmp_path):
    """A symbolic link to nowhere or into a loop, a name longer than the names a build takes beside
    its folder leave room for: one line naming the key, exit 2, nothing created."""
    (tmp_path / "broken").symlink_to("nowhere")
    (tmp_path / "loop").symlink_to("loop")
    long, longer = "a" * 240, "b" * 260
    cases = [
        ("export_dir=broken", "error: export_dir: broken is a symbolic link to nowhere, which does not exist"),
        ("hydra.run.dir=broken", "error: hydra.run.dir: broken is a symbolic link to nowhere, which does not exist"),
        ("export_dir=loop/b", "error: export_dir: loop is a symbolic link that loops (loop -> loop)"),
        ("hydra.run.dir=loop", "error: hydra.run.dir: loop is a symbolic link that loops (loop -> loop)"),
        (f"export_dir={long}", "error: export_dir: the folder name aaaaaaaaaaaaaaaaaaaaaaaa... is 240 bytes long"),
        (f"hydra.run.dir=x/{longer}", "error: hydra.run.dir: the folder name bbbbbbbbbbbbbbbbbbbbbbbb... is 260 bytes"),
        (f"hydra.sweep.subdir={long}", "error: hydra.sweep.subdir: the folder name aaaaaaaaaaaaaaaaaaaaaaaa... is 240"),
    ]
    for arg, said in cases:
        r = run_cli("format=pytorch", arg, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(said), (arg, r.stderr)
        assert "a build folder's name is at most 200 bytes" in r.stderr or "symbolic link" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "loop"]
    # The Python API says the same.
    from exporter import ConfigError, TaskSpec, export_model
    from exporter.models import SimpleCNN

    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 8, 8]}, {"num_classes": 3})
    with pytest.raises(ConfigError, match="is 240 bytes long"):
        export_model(SimpleCNN(num_classes=3), None, spec, tmp_path / long, ["pytorch"])


def test_a_pickle_that_would_run_code_is_named_and_never_run(tmp_path):
    """torch.load's weights-only unpickler refuses it; the message names the file and what it asks."""
    import torch
    from transformers import GPT2Config

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "gpt2"
    GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0,
               architectures=["GPT2LMHeadModel"]).save_pretrained(folder)
    torch.save({"x": Evil()}, folder / "pytorch_model.bin")
    cases = [(["model=hf_causal_lm", "model.path=gpt2"], "error: model.path: gpt2/pytorch_model.bin is a pickle the "
              "tool will not load (it would call io.open)"),
             (["checkpoint=gpt2/pytorch_model.bin"], "error: checkpoint: gpt2/pytorch_model.bin is a pickle the tool "
              "will not load (it would call io.open)")]
    for args, said in cases:
        r = run_cli("format=pytorch", *args, "export_dir=b", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.splitlines()[-1].startswith(said), r.stderr
        assert "Traceback" not in r.stderr and not marker.exists() and not (tmp_path / "b").exists()


def test_wrong_kinds_of_values_in_a_vouched_config_are_one_line(tmp_path, golden):
    """config.yaml edited and its record re-hashed: card has nothing to say against it, verify
    names the key and what is wrong with it."""
    cases = [("seed: 0", "seed: abc", "seed: Value 'abc' of type 'str' could not be converted to Integer"),
             ("seed: 0", "seedz: 0", "seedz: not a key of ExportConfig; valid keys: model, task_spec")]
    for old, new, said in cases:
        build = golden.copy("onnx", tmp_path / new.split(":")[0])
        text = (build / "config.yaml").read_text()
        assert f"\n{old}\n" in text
        (build / "config.yaml").write_text(text.replace(f"\n{old}\n", f"\n{new}\n"))
        metadata = json.loads((build / "metadata.json").read_text())
        metadata["records"]["config.yaml"] = _sha(build / "config.yaml")
        (build / "metadata.json").write_text(json.dumps(metadata))
        r = run_cli("verify", str(build), cwd=tmp_path)
        assert r.returncode == 2 and r.stderr == (f"error: {build}/config.yaml: {said}" + r.stderr.split(said)[1]), r.stderr
        assert "does not fit this version's schema" in r.stderr and r.stderr.count("\n") == 1


def test_an_example_input_too_large_to_allocate_is_one_line(tmp_path):
    r = run_cli("format=pytorch", "task_spec.input_schema.image_size=[3,10000000,10000000]", "export_dir=b", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == (
        "error: task_spec.input_schema={'image_size': [3, 10000000, 10000000]}: the example input drawn from it does "
        "not fit in this machine's memory (it asked for 1.2 PB); declare the size the model takes"), r.stderr


def test_a_card_onto_a_place_that_takes_no_file_says_so(golden, tmp_path):
    r = run_cli("card", str(golden("onnx")), "-o", "/proc/version", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == ("error: cannot write the card to /proc/version: /proc takes no new files "
                                              "(no such file or directory)\n"), r.stderr


def test_verify_imports_nothing_from_a_build_folder_even_under_code_or_with_records_changed(tmp_path, golden):
    marker = tmp_path / "ran"
    project = tmp_path / "project"
    build = golden.copy("onnx", project / "exports" / "evil")
    (build / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    config = yaml.safe_load((build / "config.yaml").read_text())
    config["model"] = {"_target_": "exports.evil.evilmod.Boom"}  # reachable from --code . as a package path
    (build / "config.yaml").write_text(yaml.safe_dump(config))
    metadata = json.loads((build / "metadata.json").read_text())
    metadata["records"]["config.yaml"] = _sha(build / "config.yaml")
    (build / "metadata.json").write_text(json.dumps(metadata))
    # evilmod.py is on no record: the folder does not match its records, so nothing is rebuilt or imported
    r = run_cli("verify", "exports/evil", "--code", ".", cwd=project)
    assert r.returncode == 1 and "evilmod.py: not part of the build" in r.stdout, r.stdout + r.stderr
    assert "nothing was rebuilt" in r.stdout and not marker.exists()
    # listed on record too: still code inside the build folder, never imported, whatever --code says
    metadata["artifacts"]["onnx"]["extra_files"] = [{"file": "evilmod.py", "sha256": _sha(build / "evilmod.py")}]
    (build / "metadata.json").write_text(json.dumps(metadata))
    for args, cwd in ((["exports/evil", "--code", "."], project), ([".", "--code", "."], build)):
        r = run_cli("verify", *args, cwd=cwd)
        assert r.returncode in (1, 2) and not marker.exists(), r.stdout + r.stderr
    # a config.yaml changed after the build (re-hash not done): verify says so instead of rebuilding it
    clean = golden.copy("onnx", tmp_path / "clean")
    (clean / "config.yaml").write_text((clean / "config.yaml").read_text().replace("atol:", "atol: 0.5 #"))
    r = run_cli("verify", str(clean), cwd=tmp_path)
    assert r.returncode == 1 and "config.yaml: modified" in r.stdout and "verified" not in r.stdout.replace(
        "verification FAILED", ""), r.stdout + r.stderr


def test_a_fifo_in_place_of_the_targets_metadata_is_refused_not_waited_on(tmp_path, golden):
    import os

    build = golden.copy("onnx", tmp_path / "b")
    (build / "metadata.json").unlink()
    os.mkfifo(build / "metadata.json")
    r = run_cli("task_spec.input_schema.image_size=[3,32,32]", "export_dir=b", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot be read as a build record of this tool" in r.stderr


def test_a_burst_of_ctrl_c_says_interrupted_once(tmp_path):
    """Ctrl-C pressed again and again reaches every process of the terminal's group each time: one
    line, exit 130, nothing left but the folder's lock."""
    import os
    import signal
    import sys
    import time

    from conftest import wait_for

    from exporter.console import INTERRUPTED_MESSAGE

    proc = subprocess.Popen([sys.executable, "-m", "exporter", "model=lm_stub", "format=[onnx,torchscript]",
                             "export_dir=b"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: any(".staging-" in p.name for p in tmp_path.iterdir()), proc)
    for _ in range(8):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == INTERRUPTED_MESSAGE + "\n", (proc.returncode, err)
    assert [p.name for p in tmp_path.iterdir()] == [".b.lock"]


def test_a_symbolic_link_in_a_files_place_is_not_the_build(tmp_path, golden):
    """The link points at the very bytes on record, outside the folder: not what the build wrote."""
    import shutil

    build = golden.copy("onnx", tmp_path / "b")
    shutil.move(build / "model.onnx", tmp_path / "outside.onnx")
    (build / "model.onnx").symlink_to(tmp_path / "outside.onnx")
    said = f"{build}/model.onnx: a symbolic link in the place of a file the build wrote (metadata.json records it for onnx)"
    card = run_cli("card", str(build), cwd=tmp_path)
    assert card.returncode == 1 and said in card.stdout + card.stderr, card.stdout + card.stderr
    diff = run_cli("diff", str(golden("onnx")), str(build), cwd=tmp_path)
    assert diff.returncode == 1 and said in diff.stdout + diff.stderr, diff.stdout + diff.stderr


def test_files_dropped_into_hydra_and_paths_into_the_build_are_refused(tmp_path, golden):
    """A package in .hydra/ is no more part of the build than one beside the artifacts; a config
    value naming a path inside the folder (torch.hub.load's repo_or_dir) is refused before the
    rebuild reads or runs it."""
    marker = tmp_path / "ran"
    build = golden.copy("onnx", tmp_path / "dropped")
    (build / ".hydra" / "evilmod").mkdir()
    (build / ".hydra" / "evilmod" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
    card = run_cli("card", str(build), cwd=tmp_path)
    assert card.returncode == 1 and f"{build}/.hydra/evilmod: not part of the build" in card.stdout, card.stdout
    r = run_cli("verify", str(build), cwd=tmp_path)
    assert r.returncode == 1 and "nothing was rebuilt" in r.stdout, r.stdout + r.stderr
    hub = golden.copy("onnx", tmp_path / "hub")
    config = yaml.safe_load((hub / "config.yaml").read_text())
    config["model"] = {"_target_": "torch.hub.load", "repo_or_dir": str(hub / "model.onnx"), "model": "Boom",
                       "source": "local", "trust_repo": True}
    (hub / "config.yaml").write_text(yaml.safe_dump(config))
    metadata = json.loads((hub / "metadata.json").read_text())
    metadata["records"]["config.yaml"] = _sha(hub / "config.yaml")
    (hub / "metadata.json").write_text(json.dumps(metadata))
    r = run_cli("verify", str(hub), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: model.repo_or_dir: {hub}/model.onnx lies inside the build"), r.stderr
    assert "lies inside the build folder" in r.stderr and not marker.exists()


def test_a_disk_out_of_inodes_is_the_disk_full_line(tmp_path):
    import subprocess as sp

    mount = tmp_path / "ino"
    mount.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=10m,nr_inodes=4", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        r = run_cli("format=pytorch", "task_spec.input_schema.image_size=[3,8,8]", "export_dir=ino/b", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr == (
            "error: no space left on the device of ino/b while staging the build; nothing was published and the "
            "folder holds no build; free some space and run again\n"), r.stderr
        assert [p.name for p in mount.iterdir()] == [".b.lock"]
    finally:
        sp.run(["umount", "-l", str(mount)], check=False)


def test_a_burst_of_ctrl_c_to_a_sweep_says_interrupted_once(tmp_path):
    """The sweep reports once, then ignores the rest of the burst while it cleans up and ends: no
    second line, and onnxruntime's $TMPDIR/.ses is still removed."""
    import os
    import signal
    import sys
    import time

    from conftest import wait_for

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "-m", "model=lm_stub", "format=onnx,pytorch"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "TMPDIR": str(scratch)})
    wait_for(lambda: list(tmp_path.glob("exports/lm_stub/.pytorch-none.staging-*")), proc)
    for _ in range(6):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert proc.returncode == 130 and len(lines) == 1 and "Traceback" not in err, err
    assert list(scratch.iterdir()) == [] and not list(tmp_path.rglob(".*.staging-*"))
