"""What goes into an export job and what comes out of it: ``ExportJob``, the typed record of one
artifact (``ArtifactRecord``, what metadata.json holds under ``artifacts``), and ``ExportResult``.

Both doors (``cli.py`` and ``api.py``) build an ``ExportJob``; ``runner.run_export`` turns it into
an ``ExportResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..adapters import ModelAdapter
from ..config.schema import CalibrationConfig, QuantizationConfig, ValidateConfig
from ..config.task_spec import TaskSpec

if TYPE_CHECKING:
    import torch

# An artifact's status, best first; a build's status is the worst of its artifacts'.
STATUSES = ("ok", "unchecked", "mismatch", "failed")


@dataclass
class ExportJob:
    """Everything one export needs; both doors (CLI and API) build one of these."""

    model: "torch.nn.Module"
    task_spec: TaskSpec
    export_dir: Path
    # format name -> its options (a schema dataclass or a matching object), in build order
    formats: dict[str, Any]
    adapter: Optional[ModelAdapter] = None
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    # An already built iterable for calibration source "dataset".
    calibration_dataset: Any = None
    seed: int = 0
    # The exact configuration, written beside the artifacts as config.yaml.
    snapshot_yaml: str = ""
    # Where the job came from: config choices and overrides, checkpoint hash, the door used.
    provenance: dict[str, Any] = field(default_factory=dict)
    # Further records written into the build folder (relative path -> text), e.g. Hydra's .hydra/.
    extra_files: dict[str, str] = field(default_factory=dict)
    # Another build of the same folder in progress: wait for it (true) or fail at once (false).
    wait: bool = True


@dataclass
class ArtifactRecord:
    """One artifact as metadata.json records it (``artifacts.<format>``); unset fields are left out.

    ``status``: ``ok`` (exported, loaded back, matches eager PyTorch at every checked shape),
    ``unchecked`` (built, but not everything it declares was checked: ``unchecked`` says what),
    ``mismatch`` (a check failed and ``validate.strict=false`` kept it: ``warning`` says which) or
    ``failed`` (no file: ``error`` says why).
    """

    file: str
    status: str = "failed"
    export_seconds: Optional[float] = None
    # What the format reports about its file (opset, backend, method, quantization recipe, ...).
    details: Optional[dict[str, Any]] = None
    load_hint: Optional[str] = None
    quantization_report: Optional[dict[str, Any]] = None
    warnings: Optional[list[str]] = None
    validation: Optional[dict[str, Any]] = None
    # The artifact's symbolic axes per input and output name (as this format was asked to build it).
    dynamic_axes: Optional[dict[str, dict[str, str]]] = None
    dynamic_axes_verified: Optional[bool] = None
    unchecked: Optional[str] = None
    bytes: Optional[int] = None
    sha256: Optional[str] = None
    # Files the artifact needs beside ``file`` (an ONNX model's weights over the protobuf limit in
    # ``model.onnx.data``), each {"file", "bytes", "sha256"}.
    extra_files: Optional[list[dict[str, Any]]] = None
    # The runtimes the build folder is ready for as it is, and how (a decoder with its cache:
    # ONNX Runtime GenAI's genai_config.json, Optimum's config.json), or why not.
    runtimes: Optional[dict[str, Any]] = None
    warning: Optional[str] = None
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def problem(self) -> Optional[str]:
        """Why this artifact is not ``ok``, in one phrase (None when it is)."""
        return self.error or self.warning or self.unchecked


@dataclass
class ArtifactResult:
    format: str
    status: str
    path: Optional[Path] = None
    record: ArtifactRecord = field(default_factory=lambda: ArtifactRecord(file=""))


def overall_status(statuses: list[str]) -> str:
    """The worst of the artifacts' statuses: failed, then mismatch, then unchecked, then ok."""
    return max(statuses, key=STATUSES.index, default="ok")


@dataclass
class ExportResult:
    export_dir: Path
    metadata_path: Path
    artifacts: dict[str, ArtifactResult]
    metadata: dict[str, Any]
    # Set when a format failed that was ok in the build the folder held: that folder (``kept``) keeps
    # its build, and ``export_dir`` is the ``<folder>.failed`` beside it; ``lost``: those formats.
    kept: Optional[Path] = None
    lost: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The build's status as metadata.json records it (computed once, by the runner)."""
        return self.metadata["status"]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def paths(self) -> dict[str, Path]:
        """``{format: Path, ..., "metadata": Path}`` for every artifact that was built."""
        out = {name: a.path for name, a in self.artifacts.items() if a.path is not None}
        out["metadata"] = self.metadata_path
        return out
