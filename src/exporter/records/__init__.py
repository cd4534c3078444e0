"""A finished build as files: the names of its records (``layout``, a leaf), reading and re-hashing
them (``read``), and the tables the command line, ``card`` and ``diff`` print (``tables``). Imports
no torch, onnx or onnxruntime."""
