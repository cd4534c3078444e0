"""generate_dummy_input: shapes, dtypes, ranges, seeding and schema errors (scenario 5)."""

import pytest
import torch

from exporter import TaskSpec, generate_dummy_input


def spec(modality="vision", **schema):
    task_type = "vision_classification" if modality == "vision" else "language_modeling"
    return TaskSpec("t", modality, task_type, schema)


def test_scenario_5_vision_input_is_uniform_in_unit_interval():
    x = generate_dummy_input(spec(image_size=[3, 224, 224]))
    assert tuple(x.shape) == (1, 3, 224, 224)
    assert x.dtype == torch.float32
    assert x.min() >= 0 and x.max() < 1
    # uniform, not normal: the mean of 150k draws sits near 0.5
    assert abs(x.mean().item() - 0.5) < 0.01


def test_vision_default_image_size():
    assert tuple(generate_dummy_input(spec()).shape) == (1, 3, 224, 224)


def test_text_input_ids_default_shape_dtype_and_range():
    ids = generate_dummy_input(spec("text"))
    assert tuple(ids.shape) == (1, 128)
    assert ids.dtype == torch.int64
    assert ids.min() >= 0 and ids.max() < 50257


def test_text_respects_schema_vocab_and_length():
    ids = generate_dummy_input(spec("text", max_seq_len=7, vocab_size=5), batch_size=3)
    assert tuple(ids.shape) == (3, 7)
    assert ids.max() < 5


def test_same_seed_same_tensor_other_seed_other_tensor():
    s = spec(image_size=[3, 8, 8])
    assert torch.equal(generate_dummy_input(s, seed=3), generate_dummy_input(s, seed=3))
    assert not torch.equal(generate_dummy_input(s, seed=3), generate_dummy_input(s, seed=4))


@pytest.mark.parametrize("bad, field", [
    ({"image_size": [3, 0, 8]}, "image_size"),
    ({"image_size": [3, 8]}, "image_size"),
    ({"image_size": "3x8x8"}, "image_size"),
    ({"image_size": [3, -1, 8]}, "image_size"),
])
def test_invalid_image_size_names_the_field(bad, field):
    with pytest.raises(ValueError, match=f"input_schema.{field}"):
        generate_dummy_input(spec(**bad))


@pytest.mark.parametrize("bad, field", [({"max_seq_len": 0}, "max_seq_len"), ({"vocab_size": -3}, "vocab_size")])
def test_invalid_text_sizes_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        generate_dummy_input(spec("text", **bad))


def test_unknown_modality_lists_valid_values():
    with pytest.raises(ValueError, match=r"modality.*'audio'.*\['text', 'vision'\]"):
        generate_dummy_input(TaskSpec("t", "audio", "vision_classification"))


def test_task_spec_validate_rejects_inconsistent_type():
    with pytest.raises(ValueError, match="needs modality 'vision'"):
        TaskSpec("t", "text", "vision_classification").validate()
    with pytest.raises(ValueError, match="valid values"):
        TaskSpec("t", "text", "translation").validate()
