"""The CPython and Hydra internals of exporter.process.internals behave as that module relies on:
each test fails when Python or Hydra changes the internal (renamed, removed, or doing less)."""

import inspect
import subprocess
import sys
import textwrap


def run(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_ending_as_the_interpreter_would_joins_threads_then_runs_exit_handlers(tmp_path):
    done = run("""
        import atexit, os, pathlib, threading, time
        from exporter.process.internals import end_as_the_interpreter_would

        def late():
            time.sleep(0.3)
            pathlib.Path("thread").write_text(str(pathlib.Path("handler").exists()))

        threading.Thread(target=late).start()
        atexit.register(lambda: pathlib.Path("handler").touch())
        end_as_the_interpreter_would()
        os._exit(0)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    # The thread finished first (it saw no handler's file), then the handler ran.
    assert (tmp_path / "thread").read_text() == "False"
    assert (tmp_path / "handler").exists()


def test_a_forked_child_forgets_the_parents_exit_handlers_and_runs_its_own(tmp_path):
    done = run("""
        import atexit, os, pathlib, tempfile, weakref
        from exporter.process.internals import end_as_the_interpreter_would, forget_the_parents_exit_handlers

        atexit.register(lambda: pathlib.Path(f"parent-handler-{os.getpid()}").touch())
        kept = tempfile.TemporaryDirectory(dir=".")  # a weakref finalizer removes it at exit
        pid = os.fork()
        if pid == 0:
            forget_the_parents_exit_handlers()
            atexit.register(lambda: pathlib.Path("child-handler").touch())
            end_as_the_interpreter_would()
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.path.isdir(kept.name), os.path.exists(f"parent-handler-{pid}"))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]  # the parent's folder survived the child's end
    assert (tmp_path / "child-handler").exists()
    assert len(list(tmp_path.glob("parent-handler-*"))) == 1  # the parent's own exit only


def test_hydra_mode_null_replaces_get_mode_and_puts_it_back():
    from hydra._internal.hydra import Hydra

    from exporter.process.internals import hydra_mode_null

    assert list(inspect.signature(Hydra.get_mode).parameters)[:3] == ["self", "config_name", "overrides"]
    original = Hydra.get_mode
    with hydra_mode_null():
        assert Hydra.get_mode(object(), config_name="config", overrides=["hydra.mode=MULTIRUN"]) is None
    assert Hydra.get_mode is original
