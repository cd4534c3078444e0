"""Calibration samples: for static quantization and for the fidelity report of quantized artifacts.

Every source yields single samples (batch 1) as dicts of named tensors, split into the samples
that calibrate and the held-out samples that only check. The set is hashed over the tensors
actually used, so two builds calibrated on different data never look the same.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from ..config.schema import option_value
from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ..adapters import ModelAdapter
    from ..config.schema import CalibrationConfig
    from ..config.task_spec import TaskSpec

log = logging.getLogger("exporter")

RANDOM_WARNING = (
    "calibration: random samples drawn from the task spec do not represent real inputs; "
    "calibrate on real data with calibration=npz or calibration=dataset"
)
Sample = "dict[str, torch.Tensor]"


@dataclass
class CalibrationSet:
    source: str
    samples: list = field(default_factory=list)
    heldout: list = field(default_factory=list)
    description: str = ""

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for sample in [*self.samples, *self.heldout]:
            for name, tensor in sample.items():
                t = tensor.detach().contiguous().cpu()
                digest.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
                digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "description": self.description, "num_samples": len(self.samples),
                "heldout_samples": len(self.heldout), "sha256": self.sha256}


def _split(samples: list, cfg: "CalibrationConfig", where: str) -> tuple[list, list]:
    n, h = int(cfg.num_samples), int(cfg.heldout_samples)
    if len(samples) < n:
        raise ConfigError(f"{where}: {len(samples)} sample(s), but calibration.num_samples={n}")
    return samples[:n], samples[n:n + h]


def _as_sample(item: Any, example: "Mapping[str, torch.Tensor]", where: str) -> list:
    """Single-sample dicts from one item: a dict of tensors or, for one input, a tensor; batched
    items are split, unbatched ones get a batch axis; dtypes follow the example input."""
    import torch

    names = list(example)
    if isinstance(item, Mapping):
        missing = [n for n in names if n not in item]
        if missing:
            raise ConfigError(f"{where}: a sample has no {missing}; it has {sorted(item)}; the model takes {names}")
        tensors = {n: torch.as_tensor(item[n]) for n in names}
    elif len(names) == 1:
        tensors = {names[0]: torch.as_tensor(item)}
    else:
        raise ConfigError(f"{where}: the model takes several inputs {names}: yield dicts of named tensors")
    for name, t in tensors.items():
        want = example[name]
        if t.dim() == want.dim() - 1:
            t = t.unsqueeze(0)
        if t.dim() != want.dim():
            raise ConfigError(f"{where}: {name} has shape {list(t.shape)}; the example input is {list(want.shape)}")
        tensors[name] = t.to(want.dtype)
    batch = next(iter(tensors.values())).shape[0]
    return [{n: t[i:i + 1] for n, t in tensors.items()} for i in range(batch)]


def random_calibration(adapter: "ModelAdapter", task_spec: "TaskSpec", cfg: "CalibrationConfig",
                       seed: int) -> CalibrationSet:
    # Seeds far from the example's (seed, seed + 1) so the samples are not the checked inputs.
    samples = [adapter.example_inputs(task_spec, 1, seed=seed * 1_000_003 + 1000 + i)
               for i in range(int(cfg.num_samples) + int(cfg.heldout_samples))]
    log.warning(RANDOM_WARNING)
    calib, heldout = _split(samples, cfg, "calibration")
    return CalibrationSet("random", calib, heldout, f"random from task spec, seed {seed}")


def npz_calibration(path: str, example: "Mapping[str, torch.Tensor]", cfg: "CalibrationConfig") -> CalibrationSet:
    import numpy as np

    file = Path(path)
    if not file.exists():
        raise ConfigError(f"calibration.path: file not found: {file}")
    if not file.is_file():
        raise ConfigError(f"calibration.path: {file} is not a regular file; give a .npz file (numpy.savez)")
    import zipfile

    if not zipfile.is_zipfile(file):
        # np.load would try it as a pickle, and refuse (rightly) with a message about allow_pickle.
        raise ConfigError(f"calibration.path: {file} is not a .npz archive (numpy.savez writes one, a zip of "
                          "arrays named after the model inputs)")
    with np.load(file) as data:
        missing = [n for n in example if n not in data.files]
        if missing:
            raise ConfigError(f"calibration.path: {file} has no array named {missing}; it has {sorted(data.files)}; "
                              f"the arrays must be named after the model inputs {list(example)}")
        arrays = {n: data[n] for n in example}
    counts = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ConfigError(f"calibration.path: the arrays hold different sample counts {counts}")
    samples = _as_sample(arrays, example, f"calibration.path {file}")
    calib, heldout = _split(samples, cfg, f"calibration.path {file}")
    return CalibrationSet("npz", calib, heldout, str(file))


def dataset_calibration(dataset: Iterable, example: "Mapping[str, torch.Tensor]", cfg: "CalibrationConfig",
                        description: str) -> CalibrationSet:
    wanted = int(cfg.num_samples) + int(cfg.heldout_samples)
    samples: list = []
    for item in dataset:
        samples.extend(_as_sample(item, example, "calibration.dataset"))
        if len(samples) >= wanted:
            break
    calib, heldout = _split(samples[:wanted], cfg, "calibration.dataset")
    return CalibrationSet("dataset", calib, heldout, description)


def build_calibration(cfg: "CalibrationConfig", adapter: "ModelAdapter", task_spec: "TaskSpec",
                      example: "Mapping[str, torch.Tensor]", seed: int,
                      dataset: Optional[Iterable] = None) -> CalibrationSet:
    """The calibration set a job's config asks for (``dataset``: an already built iterable)."""
    source = option_value(cfg.source)
    if source == "random":
        return random_calibration(adapter, task_spec, cfg, seed)
    if source == "npz":
        if not cfg.path:
            raise ConfigError("calibration.path: calibration=npz needs a .npz file: calibration.path=FILE")
        return npz_calibration(cfg.path, example, cfg)
    if source == "dataset":
        if dataset is None:
            raise ConfigError("calibration.dataset: calibration=dataset needs calibration.dataset._target_=pkg.fn")
        return dataset_calibration(dataset, example, cfg, _describe(dataset, cfg))
    raise ConfigError(f"calibration.source: unknown source {source!r}; valid values: ['random', 'npz', 'dataset']")


def _describe(dataset: Any, cfg: "CalibrationConfig") -> str:
    target = (cfg.dataset or {}).get("_target_") if isinstance(cfg.dataset, Mapping) else None
    return str(target or type(dataset).__qualname__)
