"""A sweep's jobs composed from their set of config choices (exporter.cli.composition) are Hydra's
compositions, field for field and flag for flag, errors included."""

import pytest
from omegaconf import OmegaConf

import exporter.cli.app  # noqa: F401 (the tool's structured configs, registered as the command line does)

JOBS = [
    ["seed=3", "format=onnx", "model=lm_stub"],
    ["model=lm_stub", "seed=4", "format=[onnx,pytorch]", "quantization=dynamic"],
    ["seed=5", "model=lm_stub", "format=onnx", "quantization=dynamic"],  # the same choices, another value
    ["model=simple_cnn", "+extra=1", "validate.atol=0.5"],  # an addition
    ["model=lm_stub", "validate={atol: 0.1, strict: false}"],  # a dict value merged
    ["format=onnx", "quantization.mode=static", "calibration.num_samples=8"],
    ["format=onnx", "format.onnx.opset=13", "seed=7"],
    ["model=hf_causal_lm", "model.path=/models/a", "export_dir=elsewhere"],
    ["model=hf_causal_lm", "model.path=/models/b", "~checkpoint"],  # a deletion
    ["task_spec=language_modeling", "model=lm_stub", "cache.read=false"],
    # errors: a typo, a wrong type, an unknown option, an ambiguous value, a deletion of nothing
    ["nope=1"],
    ["seed=x"],
    ["model=nope"],
    ["seed=1,2"],
    ["model=lm_stub", "~not_there"],
    ["format.onnx.opset=13"],  # onnx not chosen
]


def _flags(node, path="<root>"):
    found = {path: (node._get_flag("struct"), node._get_flag("readonly"))}
    keys = node.keys() if OmegaConf.is_dict(node) else range(len(node))
    for key in keys:
        child = node._get_node(key)
        if OmegaConf.is_config(child):
            found.update(_flags(child, f"{path}.{key}"))
    return found


def _composed(load, master, overrides):
    try:
        config = load(master, list(overrides))
    except Exception as exc:  # noqa: BLE001 (the error is what is compared)
        return ("error", type(exc).__name__, str(exc), str(exc.__cause__))
    return (OmegaConf.to_yaml(config, resolve=False), _flags(config), type(config._metadata.object_type),
            OmegaConf.to_container(config.hydra.overrides))


@pytest.mark.parametrize("hydra_overrides", [[], ["hydra.job.chdir=false", "hydra.job.env_copy=[HOME]"]])
def test_a_job_composed_from_its_choices_is_hydras_composition(hydra_config_module, hydra_overrides):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from exporter.cli.composition import ComposedByChoices

    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("config", [*hydra_overrides, "model=lm_stub"], run_mode=RunMode.MULTIRUN)
    composed = ComposedByChoices(loader)
    errors = 0
    for overrides in JOBS:
        expected = _composed(loader.load_sweep_config, master, overrides)
        errors += expected[0] == "error"
        assert _composed(composed, master, overrides) == expected, overrides
        assert _composed(composed, master, overrides) == expected, overrides  # again, from what is kept
    assert errors == 6
    assert len(composed._by_choices) < len(JOBS) - errors  # some jobs shared their choices


def test_a_kept_composition_is_not_changed_by_the_jobs_made_from_it(hydra_config_module):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from exporter.cli.composition import ComposedByChoices

    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("config", ["model=lm_stub"], run_mode=RunMode.MULTIRUN)
    composed = ComposedByChoices(loader)
    first = composed(master, ["model=lm_stub", "seed=1"])
    first.validate.atol = 0.5
    first.hydra.overrides.task.append("seed=9")
    second = composed(master, ["model=lm_stub", "seed=2"])
    assert second.seed == 2 and second.validate.atol == 1e-4
    assert list(second.hydra.overrides.task) == ["model=lm_stub", "seed=2"]
