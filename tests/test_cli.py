"""The command-line door, run as a user runs it: a subprocess per command."""

import json
from pathlib import Path
import subprocess
import sys

import pytest

from conftest import HEAVY, NO_ONNX, REPO, run_cli_noting_imports, wait_for

SMALL = "task_spec.input_schema.image_size=[3,32,32]"


def test_default_run_writes_artifact_metadata_and_snapshots(tmp_path, cli):
    r = cli(SMALL)
    assert r.returncode == 0, r.stderr
    build = tmp_path / "exports" / "simple_cnn" / "onnx-none"
    assert {p.name for p in build.iterdir()} >= {"model.onnx", "metadata.json", "config.yaml", ".hydra", "export.log"}
    assert not [p for p in build.iterdir() if p.name.startswith(".staging")]
    md = json.loads((build / "metadata.json").read_text())
    assert md["config"]["source"] == "cli"
    assert md["config"]["choices"]["model"] == "simple_cnn" and md["config"]["choices"]["format"] == ["onnx"]
    assert md["config"]["overrides"] == [SMALL]
    # a line per format as it goes, then the closing table
    assert "onnx         model.onnx" in r.stdout
    assert "format  file        size" in r.stdout and "max |diff|" in r.stdout


def test_onnx_dynamic_on_the_shipped_default(tmp_path, cli):
    r = cli("format=onnx", "quantization=dynamic", SMALL)
    assert r.returncode == 0, r.stderr
    md = json.loads((tmp_path / "exports/simple_cnn/onnx-dynamic/metadata.json").read_text())
    assert md["quantization"] == "dynamic" and md["artifacts"]["onnx"]["status"] == "ok"
    # the closing table carries the quantization report
    assert "size vs fp32  agreement  latency vs fp32" in r.stdout
    card = cli("card", "exports/simple_cnn/onnx-dynamic")
    assert "Quantization against the fp32 twin (calibration: random, 32 samples" in card.stdout


def test_several_formats_and_lm_stub(tmp_path, cli):
    r = cli("model=lm_stub", "format=[onnx,torchscript,pytorch]", "task_spec.input_schema.max_seq_len=32")
    assert r.returncode == 0, r.stderr
    # task_spec.use_cache=null on a model without a key/value cache: built as before, without a word about it
    # (test_kv_cache.py's refusals under use_cache=true rely on this)
    assert "key/value" not in r.stdout + r.stderr, r.stdout + r.stderr
    build = tmp_path / "exports/lm_stub/onnx+torchscript+pytorch-none"
    assert {"model.onnx", "model.torchscript", "model.pth"} <= {p.name for p in build.iterdir()}
    md = json.loads((build / "metadata.json").read_text())
    assert md["task_type"] == "language_modeling" and md["input_shape"] == [1, 32]


def test_sweep_with_a_failing_job_reports_it_and_exits_non_zero(tmp_path, cli):
    r = cli("-m", "format=pytorch", "quantization=none,static", SMALL)
    assert r.returncode != 0
    assert "sweep: 2 job(s), 1 ok, 1 failed" in r.stdout
    assert "not available for format pytorch" in r.stdout
    assert (tmp_path / "exports/simple_cnn/pytorch-none/model.pth").is_file()


def test_help_lists_every_group_option_and_answers_without_torch(help_run):
    r, imported = help_run
    assert r.returncode == 0 and "hydra" in imported and not imported & HEAVY, sorted(imported & HEAVY)
    shipped = [f"{group}={path.stem}" for group in ("model", "task_spec", "format", "quantization", "calibration")
               for path in sorted((REPO / "conf" / group).glob("*.yaml"))]
    for option in (*shipped, "model=hf ", "validate.min_agreement", "quantization.weight_type",
                   "format.onnx.opset", "format.onnx.backend", "validate.strict",
                   "checkpoint=", "seed=", "export_dir="):
        assert option in r.stdout, option


@pytest.mark.parametrize("args", [["--cfg", "job"], ["format.onnx.opsett=1"], ["quantization=int4"],
                                  ["format.onnx.backend=dynamo"]])
def test_cfg_and_config_errors_do_not_import_torch(tmp_path, args):
    r, imported = run_cli_noting_imports(*args, cwd=tmp_path)
    assert "hydra" in imported and not imported & HEAVY, sorted(imported & HEAVY)
    assert r.returncode == (0 if args[0] == "--cfg" else 2), r.stderr


@pytest.mark.parametrize("args, message", [
    (["format.onnx.opsett=17"], "Key 'opsett' not in 'OnnxFormatConfig'"),
    (["format.onnx.opset=x"], "could not be converted to Integer"),
    (["quantization=int4"], "Available options in 'quantization'"),
    (["checkpoint=/nonexistent/w.pt"], "checkpoint: file not found: /nonexistent/w.pt"),
    (["task_spec.input_schema.image_size=[3,64]"], "task_spec.input_schema.image_size: must be three positive"),
    (["quantization=static", "format=pytorch"], "quantization=static is not available for format pytorch"),
    (["quantization=fp16", "format=torchscript"], "use format=onnx"),
    (["quantization=static", "calibration=npz", "calibration.path=/nope.npz"], "calibration.path: file not found"),
    (["format.onnx.backend=dynamo"], "format.onnx.backend=dynamo exports opset 18 or newer"),
    (["model._target_=exporter.models.Nope"], "model: cannot build exporter.models.Nope"),
    (["model.num_classes=???"], "model.num_classes: Missing mandatory value"),
    (["model._target_=exporter.models.hf.TASKS"], "cannot build exporter.models.hf.TASKS: Expected a callable target"),
    (["+model.bogus=1"], "cannot build exporter.models.SimpleCNN: Error in call to target "
                         "'exporter.models.simple_cnn.SimpleCNN': TypeError("),
    (["model=lm_stub", "task_spec.input_schema.vocab_size=5000"], "the model failed on its example input"),
])
def test_errors_are_one_clear_message_with_no_traceback(tmp_path, cli, args, message):
    r = cli(*args, "hydra.run.dir=out")
    output = r.stdout + r.stderr
    assert r.returncode != 0
    assert message in output
    assert "Traceback" not in output
    assert not any((tmp_path / "out" / f).exists() for f in ("model.onnx", "metadata.json"))


def test_card_describes_a_build(tmp_path, cli, golden):
    golden.copy("onnx+pytorch", tmp_path / "b")
    r = cli("card", "b")
    assert r.returncode == 0, r.stderr
    assert "# vision_classification: SimpleCNN (onnx, pytorch) - ok" in r.stdout
    assert "`pixel_values`: float32 [1, 3, 32, 32] (dynamic: axis 0 = batch)" in r.stdout
    assert "InferenceSession('model.onnx'" in r.stdout and "load_state_dict" in r.stdout
    r = cli("card")  # no folder: the newest build under ./exports
    assert r.returncode == 2 and "no build found" in r.stderr
    r = cli("card", str(tmp_path / "b"), "-o", "card.md")
    assert (tmp_path / "card.md").read_text() == r.stdout


def test_diff_shows_what_changed_between_two_builds(tmp_path, cli, golden):
    every = "format=[onnx,torchscript,pytorch]"
    golden.copy("onnx+torchscript+pytorch", tmp_path / "a")  # built in another process than b
    assert cli(SMALL, "hydra.run.dir=b", every).returncode == 0
    golden.copy("onnx opset 17", tmp_path / "c")  # another opset (and formats): shared with test_identity's diff
    same = cli("diff", "a", "b")
    # a rebuild in a new process gives the same bytes, format by format
    assert same.returncode == 0 and "builds are identical" in same.stdout
    assert same.stdout.count("identical bytes") == 3
    changed = cli("diff", "a", "c")
    assert changed.returncode == 1
    assert "format.onnx.opset: 14 -> 17" in changed.stdout and "builds differ" in changed.stdout


MY_NET = '''
import torch


class TinyNet(torch.nn.Module):
    def __init__(self, hidden: int = 8, classes: int = 3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, hidden),
                                        torch.nn.ReLU(), torch.nn.Linear(hidden, classes))

    def forward(self, pixel_values):
        return self.body(pixel_values)
'''

MY_NET_YAML = '''# @package _global_
defaults:
  - override /task_spec: vision_classification
model:
  _target_: mynets.TinyNet
  hidden: 8
  classes: 3
task_spec:
  input_schema:
    image_size: [3, 16, 16]
  output_schema:
    num_classes: ${model.classes}
'''


def test_own_model_from_a_config_dir(tmp_path, cli):
    (tmp_path / "mynets.py").write_text(MY_NET)
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "tiny_net.yaml").write_text(MY_NET_YAML)
    r = cli("--config-dir", "my_conf", "model=tiny_net", "model.hidden=16", "format=[onnx,torchscript]")
    assert r.returncode == 0, r.stdout + r.stderr
    md = json.loads((tmp_path / "exports/tiny_net/onnx+torchscript-none/metadata.json").read_text())
    assert md["model_class"] == "mynets.TinyNet" and md["output_shape"] == [1, 3]


def test_own_model_from_the_command_line_alone(tmp_path, cli):
    (tmp_path / "mynets.py").write_text(MY_NET)
    r = cli("~model", "+model={_target_: mynets.TinyNet, classes: 5}", "task_spec.input_schema.image_size=[3,16,16]",
            "task_spec.output_schema.num_classes=5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path / "exports/TinyNet/onnx-none/metadata.json").read_text())["output_shape"] == [1, 5]




def test_a_failing_format_exits_non_zero_after_building_the_others(tmp_path, cli):
    """The build is published with the failure on record; stderr says so in one line; export.log,
    not the console, holds the traceback. (The legacy exporter alone: its fallback fails too.)"""
    (tmp_path / "noonnx.py").write_text(NO_ONNX)
    r = cli("~model", "+model={_target_: noonnx.NoOnnx}", "task_spec.input_schema.image_size=[1,4,4]",
            "task_spec.output_schema.num_classes=4", "format=[onnx,torchscript]", "format.onnx.backend=legacy",
            "hydra.run.dir=out")
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    assert "FAILED" in r.stdout
    assert r.stderr.startswith("error: the build is published, but a format failed: onnx:")
    assert len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "out/model.torchscript").is_file() and not (tmp_path / "out/model.onnx").exists()
    md = json.loads((tmp_path / "out/metadata.json").read_text())
    assert md["status"] == "failed" and md["artifacts"]["onnx"]["error"]
    log = (tmp_path / "out/export.log").read_text()
    assert "onnx: traceback of the failure" in log and "Traceback (most recent call last)" in log


@pytest.mark.slow
def test_quantized_state_dict_says_how_to_load_it(tmp_path, cli):
    r = cli("format=pytorch", "quantization=dynamic", SMALL)
    assert r.returncode == 0, r.stderr
    assert "quantize_dynamic" in r.stdout and "load_state_dict" in r.stdout


def test_a_value_left_missing_is_one_clear_message(tmp_path, cli):
    r = cli("quantization=static", "calibration=dataset", "hydra.run.dir=out")
    assert r.returncode != 0
    assert "calibration.dataset._target_: Missing mandatory value" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_a_failure_in_user_code_is_reported_without_a_traceback(tmp_path, cli):
    (tmp_path / "baddata.py").write_text("def batches():\n    raise RuntimeError('disk on fire')\n    yield\n")
    args = ["quantization=static", "calibration=dataset", "calibration.dataset._target_=baddata.batches",
            SMALL, "hydra.run.dir=out"]
    r = cli(*args)
    assert r.returncode == 2
    assert "error: RuntimeError: disk on fire (HYDRA_FULL_ERROR=1 shows the traceback)" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "Traceback" in cli(*args, env={"HYDRA_FULL_ERROR": "1"}).stderr


def test_diff_names_other_calibration_data_behind_the_same_config(tmp_path, cli):
    import numpy as np

    common = ["quantization=static", "calibration=npz", f"calibration.path={tmp_path / 'c.npz'}", SMALL,
              "calibration.num_samples=4", "calibration.heldout_samples=2", "quantization.latency_runs=2"]
    for folder, seed in (("a", 0), ("b", 1)):
        rng = np.random.default_rng(seed)
        np.savez(tmp_path / "c.npz", pixel_values=rng.random((6, 3, 32, 32), dtype=np.float32))
        assert cli(*common, f"hydra.run.dir={folder}").returncode == 0
    r = cli("diff", "a", "b")
    assert r.returncode == 1
    assert "inputs:" in r.stdout and "calibration.sha256" in r.stdout
    assert "\nconfig:" not in r.stdout  # the configs are the same


@pytest.mark.parametrize("overrides", [[], ["model=lm_stub", "format=[onnx,torchscript]", "quantization=static"],
                                       ["model=hf_causal_lm", "model.path=/nowhere", "hydra/launcher=basic"]])
def test_hydra_mode_is_read_without_a_composition_only_where_it_is_null(hydra_config_module, overrides):
    """main() skips Hydra's get_mode (a whole composition) when the command line cannot change
    hydra.mode: then the shipped configs' null is what Hydra itself would read."""
    from hydra.core.global_hydra import GlobalHydra

    from exporter.cli.app import mode_is_default

    assert mode_is_default(overrides + ["-m"])
    assert GlobalHydra.instance().hydra.get_mode(config_name="config", overrides=overrides) is None
    for arg in ("hydra.mode=MULTIRUN", "+hydra.mode=RUN", "--config-dir=/elsewhere", "-cn", "--config-name=mine",
                "hydra.searchpath=[pkg://mine]", "--config-na", "--config-di=/elsewhere", "-cnmine", "--exp"):
        assert not mode_is_default(overrides + [arg]), arg


def test_a_signal_after_the_job_ends_the_process_at_once_without_a_traceback(tmp_path):
    """Ctrl-C as the job returns (here: sent by the process to itself right after main()) must not
    raise into interpreter shutdown, where torch's exit handlers would print a traceback: it exits
    130 at once, saying the new build is complete."""
    code = ("import os, signal, sys, time\nfrom exporter.cli import app as cli\n"
            f"sys.argv = ['exporter', 'format=pytorch', 'hydra.run.dir=b', {SMALL!r}]\n"
            "try:\n    cli.main()\nfinally:\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(10)\n"
            "    print('NOT REACHED')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 130, r.stdout + r.stderr
    assert "NOT REACHED" not in r.stdout and "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert f"interrupted after the new build was published; {tmp_path / 'b'} is complete" in r.stderr, r.stderr
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("signum, code, command, when", [
    (2, 130, "format=pytorch", "hydra"), (15, 143, "format=pytorch", "hydra"), (2, 130, "verify", "hydra"),
    # inside torch's own import, where an exception raised by the handler used to abort the process
    (2, 130, "format=pytorch", "torch._C"), (15, 143, "format=pytorch", "numpy")],
    ids=["SIGINT", "SIGTERM", "SIGINT-verify", "SIGINT-in-torch", "SIGTERM-in-torch-numpy"])
def test_a_signal_while_the_tool_is_still_loading_is_an_interruption_not_a_traceback(tmp_path, signum, code,
                                                                                        command, when):
    """Sent as soon as the import-time line of ``when`` says it was imported: Hydra (before main()
    runs), or a module torch imports while it starts up."""
    import os

    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    args = ["verify", "nothing-here"] if command == "verify" else [command, SMALL]
    proc = subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.rsplit("|", 1)[-1].strip() == when:
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=120)
    err = "".join(line for line in [*seen, *err.splitlines(True)] if not line.startswith("import time:"))
    assert proc.returncode == code, out + err
    expected = ("interrupted: exporter verify did not finish" if command == "verify"
                else "interrupted; nothing was published (the folder is as it was before this run)")
    assert err.strip().splitlines() == [expected], err
    assert "RecursionError" not in out and not list(tmp_path.rglob("*.staging-*"))
    assert not (tmp_path / "exports").exists() or not list((tmp_path / "exports").rglob("metadata.json"))


def test_signals_wait_while_a_native_library_is_imported_and_arrive_after(tmp_path):
    """exporter.cli.startup's hold: a SIGTERM during the import is delivered once the import is done."""
    (tmp_path / "native_lib.py").write_text("import os, pathlib, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\n"
                                            "time.sleep(0.2)\npathlib.Path('import-done').touch()\n")
    code = ("import pathlib, signal\nfrom exporter import interrupts\nfrom exporter.cli import startup\n"
            "startup.hold_signals_while_importing(frozenset({'native_lib'}))\n"
            "signal.signal(signal.SIGTERM, interrupts.raise_interrupted)\n"
            "try:\n    import native_lib\n    print('NOT INTERRUPTED')\n"
            "except interrupts.Interrupted:\n    print('interrupted after the import:', pathlib.Path('import-done').exists())\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "interrupted after the import: True", r.stdout + r.stderr


def test_ctrl_c_during_verify_removes_its_rebuild_and_says_so(tmp_path, golden):
    import os
    import signal

    golden.copy("pytorch", tmp_path / "b")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "verify", "b"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list(scratch.glob("exporter-verify-*")), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1] == "interrupted: exporter verify did not finish" and "Traceback" not in err
    assert not list(scratch.iterdir())


def test_a_sweep_no_job_can_compose_leaves_nothing_behind(tmp_path, cli):
    r = cli("-m", "format=onnx,torchscrpt", SMALL)
    assert r.returncode == 2 and "Could not find 'format/torchscrpt'" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # no exports/multirun.yaml


def test_the_entry_point_ends_the_process_after_exit_handlers_and_flushed_output(tmp_path):
    """entry() skips the interpreter's teardown (0.3-0.4 s with torch loaded) but not what a
    process owes on exit: a thread that is not a daemon finishes, then atexit handlers (here one of
    the caller's, and a temporary folder's finalizer) run, buffered stdout reaches the pipe, and
    main()'s exit code is the process's."""
    code = ("import atexit, sys, tempfile, threading, time\nfrom exporter.cli import app as cli\n"
            "atexit.register(print, 'ATEXIT RAN')\nleft = tempfile.TemporaryDirectory(dir='.')\n"
            "threading.Thread(target=lambda: (time.sleep(0.5), print('THREAD DONE'))).start()\n"
            # an executor left open (a launcher's): its worker threads end at threading's exit callbacks
            "from concurrent.futures import ThreadPoolExecutor\npool = ThreadPoolExecutor(1)\npool.submit(print, 'POOL RAN')\n"
            "sys.argv = ['exporter', *sys.argv[1:]]\ncli.entry()\nprint('NOT REACHED')\n")
    ok = subprocess.run([sys.executable, "-c", code, "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and "export_dir:" in ok.stdout and "POOL RAN" in ok.stdout, ok.stdout + ok.stderr
    assert ok.stdout.rstrip().endswith("THREAD DONE\nATEXIT RAN"), ok.stdout
    assert "NOT REACHED" not in ok.stdout and list(tmp_path.iterdir()) == []
    bad = subprocess.run([sys.executable, "-c", code, "quantization=int4"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "quantization" in bad.stderr and "ATEXIT RAN" in bad.stdout, bad.stderr


def test_under_a_profiler_the_entry_point_exits_the_ordinary_way(tmp_path):
    """cProfile, coverage and pyinstrument write their results at interpreter exit: with one
    active, entry() leaves through sys.exit so that they still do."""
    out = tmp_path / "profile.out"
    r = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "exporter", "--cfg", "job"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "export_dir:" in r.stdout, r.stderr
    assert out.stat().st_size > 0


def test_between_sweep_jobs_freed_heap_memory_goes_back_to_the_system(tmp_path):
    """release_memory (run after each job of a sweep that shares a process) returns what the last
    job freed: here 190 MB of 64 KB heap blocks, freed below three that stay, which the allocator
    would otherwise keep."""
    code = ("import numpy\nfrom exporter.cli.sweep import release_memory\n"
            "def rss():\n    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024\n"
            "blocks = [numpy.ones(8000) for _ in range(3000)]\nkeep = [numpy.ones(8000) for _ in range(3)]\n"
            "del blocks\nbefore = rss()\nrelease_memory()\nprint(before, rss())\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    before, after = map(int, r.stdout.split())
    assert before - after > 120, (before, after)


def _run_with_stdout(stdout: str, *args: str, cwd, unbuffered: bool = False) -> subprocess.CompletedProcess:
    """``python -m exporter ARGS`` with stdout buffered (as on a user's machine; ``unbuffered``:
    PYTHONUNBUFFERED=1) and going to a pipe whose reader is already gone (``closed``, as
    ``| head -1`` leaves it) or to /dev/full."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "HYDRA_FULL_ERROR")}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    if stdout == "closed":
        read, write = os.pipe()
        os.close(read)
        try:
            return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=cwd, env=env, stdout=write,
                                  stderr=subprocess.PIPE, text=True, timeout=240)
        finally:
            os.close(write)
    with open("/dev/full", "w") as full:
        return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=cwd, env=env, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=240)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_exit_status_survives_a_closed_or_full_stdout(tmp_path):
    """A reader that closed the pipe (| head -1) loses the output, not the exit status or the error
    line: a sweep with a failed job still exits 1, a failed format 1, a good build 0. Output that
    cannot be written to a full disk is an error of its own (120, as Python's), never silent."""
    # A good build with stdout closed or full: tests/test_hostile.py (every command) and the test below.
    (tmp_path / "noonnx.py").write_text(NO_ONNX)  # a model ONNX cannot export: a real failure
    bad = ["~model", "+model={_target_: noonnx.NoOnnx}", "task_spec.input_schema.image_size=[1,4,4]",
           "task_spec.output_schema.num_classes=4", "format.onnx.backend=legacy"]
    failed = _run_with_stdout("closed", "format=[onnx,pytorch]", *bad, "export_dir=f", cwd=tmp_path)
    assert failed.returncode == 1 and "error: the build is published, but a format failed" in failed.stderr
    sweep = _run_with_stdout("closed", "-m", "format=onnx,pytorch", *bad, cwd=tmp_path)
    assert sweep.returncode == 1 and "error: 1 of 2 sweep job(s) failed" in sweep.stderr, sweep.stderr
    for r in (failed, sweep):
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_output_lost_at_each_write_is_still_an_error(tmp_path):
    """With PYTHONUNBUFFERED=1 every line fails as it is written, not at the last flush: a single
    run and a sweep still end with 120 and say why."""
    single = _run_with_stdout("full", "format=pytorch", SMALL, "export_dir=g", cwd=tmp_path, unbuffered=True)
    sweep = _run_with_stdout("full", "-m", "format=pytorch", "seed=0,1", SMALL, cwd=tmp_path, unbuffered=True)
    for r in (single, sweep):
        assert r.returncode == 120 and "error: cannot write the output: No space left on device" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "Logging error" not in r.stderr, r.stderr


def _on_a_terminal(*args: str, cwd: Path, interrupt_at: bytes | None = None) -> tuple[int, str]:
    """``python -m exporter ARGS`` with a pseudo-terminal as stdin, stdout and stderr (as a user's
    shell runs it); with ``interrupt_at``, Ctrl-C to its process group as soon as that text shows."""
    import os
    import pty
    import select
    import signal

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(TERM="xterm", COLUMNS="120")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=cwd, stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out, sent = b"", False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal's other end closed: the process is gone
                    break
                if not data:
                    break
                out += data
                if interrupt_at is not None and not sent and interrupt_at in out:
                    os.killpg(proc.pid, signal.SIGINT)
                    sent = True
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=120), out.decode(errors="replace")
    finally:
        os.close(master)


def test_long_work_shows_its_step_on_a_terminal_and_plain_lines_elsewhere(tmp_path):
    """On a terminal, each step (loading the model, exporting, loading the artifact back, each check,
    writing the weights) is drawn with its elapsed time and cleared, the result lines print as
    before, and the cursor is shown again even when Ctrl-C stops the build. Piped, no drawing: a step
    running longer than EXPORTER_PROGRESS_SECONDS gets a plain line, in export.log too."""
    import re

    code, out = _on_a_terminal("model=lm_stub", "format=[onnx,pytorch]", "export_dir=drawn", cwd=tmp_path)
    assert code == 0, out
    for shown in ("loading the model", "onnx: exporting", "onnx: loading model.onnx in its runtime",
                  "onnx: checking the example against eager PyTorch",
                  "onnx: checking the second example against eager PyTorch", "pytorch: writing the weights"):
        assert re.search(re.escape(shown) + r" \S*0:00:\d\d", out), (shown, out)
    assert out.count("\x1b[?25l") == out.count("\x1b[?25h") > 0, out  # the cursor is hidden while drawn, shown after
    assert "\r\nonnx     model.onnx  " in out and out.endswith("build: drawn (ok)\r\n"), out
    code, out = _on_a_terminal("model=lm_stub", "format=[onnx,pytorch]", "export_dir=stopped", cwd=tmp_path,
                               interrupt_at=b"onnx: exporting")
    assert code == 130 and out.rstrip().endswith("nothing was published (the folder is as it was before this run)")
    assert out.rfind("\x1b[?25h") > out.rfind("\x1b[?25l"), out
    assert not (tmp_path / "stopped").exists()
    r = subprocess.run([sys.executable, "-m", "exporter", "model=lm_stub", "format=pytorch", "export_dir=piped"],
                       cwd=tmp_path, capture_output=True, text=True, env={**__import__("os").environ,
                                                                            "EXPORTER_PROGRESS_SECONDS": "0"})
    assert r.returncode == 0 and "\x1b[" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert re.search(r"^pytorch: writing the weights \(\d\.\d s so far\)$", r.stdout, re.M), r.stdout
    assert "pytorch: writing the weights (" in (tmp_path / "piped" / "export.log").read_text()
    for never in ("off", "inf"):  # no lines at all, and no thread that cannot wait that long
        r = subprocess.run([sys.executable, "-m", "exporter", "model=lm_stub", "format=pytorch", f"export_dir={never}"],
                           cwd=tmp_path, capture_output=True, text=True, env={**__import__("os").environ,
                                                                                "EXPORTER_PROGRESS_SECONDS": never})
        assert r.returncode == 0 and "so far" not in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
