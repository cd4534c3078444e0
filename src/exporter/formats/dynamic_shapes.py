"""The dynamic dimensions of an export, in torch.export's form, shared by every format built on
``torch.export`` (the ``exported_program`` format and the ONNX dynamo backend)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

    from ..adapters import ModelAdapter


def torch_export_dynamic_shapes(adapter: "ModelAdapter", example_inputs: "Mapping[str, torch.Tensor]",
                                batch: bool, sequence: bool, named_images: bool = False) -> Any:
    """Named ``torch.export.Dim`` objects for the adapter's dynamic axes, per input of its wrapper.

    The adapter names axes per input (``{"input_ids": {0: "batch", 1: "sequence"}}``); one name is
    one Dim shared by every input that has it, so torch.export knows the inputs agree. The sequence
    axis is bounded by the example, which holds the longest sequence the model takes (max_seq_len);
    an example one token long leaves it fixed. An image's height and width are ``Dim.DYNAMIC``: their
    bounds come from the model's arithmetic (strided convolutions, pooling), which torch.export infers;
    ``named_images`` gives them as the names ``torch.onnx.export`` keeps in the graph instead.
    The result is for the adapter's wrapper, whose ``forward(*tensors)`` takes all inputs as one
    varargs tuple. None when nothing is dynamic.

    Example:
        >>> import torch
        >>> from exporter.adapters import LanguageModelingAdapter
        >>> shapes = torch_export_dynamic_shapes(LanguageModelingAdapter(), {"input_ids": torch.zeros(1, 16)},
        ...                                      batch=True, sequence=True)
        >>> sorted(dim.__name__ for dim in shapes[0][0].values())
        ['batch', 'sequence']
    """
    import torch

    axes = adapter.dynamic_axes(batch=batch, sequence=sequence)
    if not any(name in axes for name in example_inputs):
        return None
    dims: dict[str, Any] = {}
    per_input = []
    for name, tensor in example_inputs.items():
        spec = {}
        for axis, dim_name in axes.get(name, {}).items():
            if dim_name == "sequence" and int(tensor.shape[axis]) < 2:
                # The example holds the longest sequence the model takes: one token leaves the axis
                # no other size, and torch.export cannot bound a dimension to [2, 1].
                continue
            if dim_name in ("height", "width"):
                # An image's size passes through strided convolutions and pooling, whose arithmetic
                # bounds it (at least a few pixels, say): torch.export infers those bounds itself.
                spec[axis] = dim_name if named_images else torch.export.Dim.DYNAMIC
                continue
            if dim_name not in dims:
                bound = {"max": int(tensor.shape[axis])} if dim_name == "sequence" else {}
                dims[dim_name] = torch.export.Dim(dim_name, **bound)
            spec[axis] = dims[dim_name]
        per_input.append(spec or None)
    return (tuple(per_input),)


def trace_inputs(example_inputs: "Mapping[str, torch.Tensor]", shapes: Any) -> "tuple[torch.Tensor, ...]":
    """The example inputs to trace with, each dynamic axis of size 1 repeated to size 2.

    torch.export specializes a dimension traced at size 1 (the example batch) to the constant 1
    and then refuses it as dynamic ("your code specialized it to be a constant (1)"); traced at 2,
    the dimension stays symbolic and the program still takes 1. The job checks the artifact at the
    example's own shape and at a second one.
    """
    tensors = list(example_inputs.values())
    if not shapes:
        return tuple(tensors)
    traced = []
    for tensor, spec in zip(tensors, shapes[0]):
        for axis in (spec or {}):
            if tensor.shape[axis] == 1:
                tensor = tensor.repeat_interleave(2, dim=axis)
        traced.append(tensor)
    return tuple(traced)
