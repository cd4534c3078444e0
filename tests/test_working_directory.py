"""The build leaves the process's working directory alone: a relative path the user's code writes
while the job builds (the model's forward, a thread of theirs) lands where the user ran the tool,
not in a staging folder removed with the build."""

import subprocess
import sys

MODEL = '''
import os
from pathlib import Path

from exporter.models import SimpleCNN


class CwdNoted(SimpleCNN):
    def forward(self, x):
        with Path("cwd-seen.txt").open("a") as f:  # relative: resolved against the working directory
            f.write(os.getcwd() + "\\n")
        return super().forward(x)
'''


def test_the_models_relative_writes_during_the_build_land_in_the_runs_folder(tmp_path):
    (tmp_path / "noted.py").write_text(MODEL)
    done = subprocess.run([sys.executable, "-m", "exporter", "model._target_=noted.CwdNoted", "format=[onnx,pytorch]",
                           "quantization=dynamic", "task_spec.input_schema.image_size=[3,16,16]"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    seen = (tmp_path / "cwd-seen.txt").read_text().split()
    # Called while exporting, checking and measuring: many times, always from the run's folder.
    assert len(seen) > 5 and set(seen) == {str(tmp_path)}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["cwd-seen.txt", "exports", "noted.py"]
