"""Milliseconds per new token: the tool's cached decoder graph against the alternatives, batch 1,
one ONNX Runtime thread (and one torch thread), prompts of 16 and 128 tokens, 64 new tokens.

Each model (random weights, saved with save_pretrained beside a small byte-level BPE tokenizer) is
built twice by the tool: with its key/value cache (the default) and with
``task_spec.use_cache=false``. Then, alternately, --repeat times each, every measurement in a fresh
process:

- ``tool cached (ORT loop)``: a plain ONNX Runtime greedy loop over the cached graph;
- ``tool cached (GenAI)``: ONNX Runtime GenAI on the build folder as it is (genai_config.json);
- ``tool uncached``: the graph without the cache, the whole sequence again for every token;
- ``model builder (GenAI)``: the graph ONNX Runtime GenAI's own model builder writes
  (``python -m onnxruntime_genai.models.builder``, fp32, cpu), run by ONNX Runtime GenAI; Llama-family
  models only (the builder does not build GPT-2 in a layout GenAI 0.18 runs);
- with ``--optimum-python`` (an interpreter of a scratch environment with ``optimum[onnxruntime]``,
  which pins transformers 4.57): ``optimum graph (ORT loop)``, the same loop over the graph
  ``optimum-cli export onnx --task text-generation-with-past`` writes, and ``optimum
  ORTModelForCausalLM`` / ``tool folder in ORTModelForCausalLM``, Optimum's ``generate`` on its own
  export and on the tool's build folder;
- ``eager generate``: transformers' ``generate`` with its own cache.

The table gives the median ms per new token of each, and its ratio to the tool's cached graph.

    python benchmarks/generation.py --repeat 5 --optimum-python /tmp/optvenv/bin/python
    python benchmarks/generation.py --models gpt2-tiny --prompts 16 --repeat 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exporter.records.tables import markdown_table

NEW_TOKENS = 64


def make_models(root: Path, names: list[str]) -> dict[str, Path]:
    import torch
    import transformers as T

    torch.manual_seed(0)
    made = {}
    for name in names:
        folder = root / name
        if name == "gpt2-124m":
            model = T.GPT2LMHeadModel(T.GPT2Config())
        elif name == "llama-50m":
            model = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1408,
                                                     num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                                                     max_position_embeddings=2048, bos_token_id=1, eos_token_id=2))
        elif name == "llama-tiny":
            model = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=256,
                                                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                     max_position_embeddings=512, bos_token_id=1, eos_token_id=2))
        elif name == "gpt2-tiny":
            model = T.GPT2LMHeadModel(T.GPT2Config(n_embd=128, n_layer=2, n_head=4, vocab_size=1000, bos_token_id=1,
                                                   eos_token_id=2))
        else:
            raise SystemExit(f"unknown model {name!r}")
        model.save_pretrained(folder)
        tokenizer().save_pretrained(folder)  # the model builder needs one in the folder
        made[name] = folder
    return made


def tokenizer():
    """A small byte-level BPE tokenizer (the prompts are token ids; the builder only copies it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["The cache holds the keys and values of every token seen so far."] * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_with_model_builder(folder: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(folder), "-o", str(out),
                           "-p", "fp32", "-e", "cpu", "-c", str(out.parent / "builder-cache")],
                          capture_output=True, text=True, cwd=out.parent)
    if done.returncode != 0:
        raise SystemExit(f"the model builder failed on {folder}: {done.stderr.strip()[-800:]}")
    return out


def build_with_optimum(python: str, folder: Path, out: Path) -> Path:
    cli = str(Path(python).parent / "optimum-cli")
    done = subprocess.run([cli, "export", "onnx", "--model", str(folder), "--task", "text-generation-with-past",
                           str(out)], capture_output=True, text=True, cwd=out.parent)
    if done.returncode != 0:
        raise SystemExit(f"optimum-cli failed on {folder}: {done.stderr.strip()[-800:]}")
    return out


def build(folder: Path, out: Path, *extra: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "exporter", "model=hf_causal_lm", f"model.path={folder}",
                           f"export_dir={out}", "format=onnx", *extra], capture_output=True, text=True, cwd=out.parent)
    if done.returncode != 0:
        raise SystemExit(f"the tool failed on {folder}: {done.stderr.strip()[-500:]}")
    return out


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cached_loop(sess, prompt, layout) -> float:
    """ms per new token of a greedy loop over a cached graph (the prompt's step included)."""
    import numpy as np

    names = [i.name for i in sess.get_inputs()]
    ids = np.array([prompt], dtype=np.int64)
    mask = np.ones_like(ids)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "position_ids" in names:
        feed["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
    empty = np.zeros((1, layout["key_value_heads"], 0, layout["head_size"]), dtype=np.float32)
    for i in range(layout["layers"]):
        feed[f"past_key_values.{i}.key"] = feed[f"past_key_values.{i}.value"] = empty
    started = time.perf_counter()
    for step in range(NEW_TOKENS):
        outputs = sess.run(None, feed)
        token = int(outputs[0][0, -1].argmax())
        length = mask.shape[1]
        mask = np.ones((1, length + 1), dtype=np.int64)
        feed = {"input_ids": np.array([[token]], dtype=np.int64), "attention_mask": mask}
        if "position_ids" in names:
            feed["position_ids"] = np.array([[length]], dtype=np.int64)
        for i in range(layout["layers"]):
            feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = outputs[1 + 2 * i], outputs[2 + 2 * i]
    return (time.perf_counter() - started) * 1000 / NEW_TOKENS


def uncached_loop(sess, prompt) -> float:
    import numpy as np

    names = [i.name for i in sess.get_inputs()]
    tokens = list(prompt)
    started = time.perf_counter()
    for _ in range(NEW_TOKENS):
        ids = np.array([tokens], dtype=np.int64)
        feed = {"input_ids": ids}
        if "attention_mask" in names:
            feed["attention_mask"] = np.ones_like(ids)
        if "position_ids" in names:
            feed["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
        tokens.append(int(sess.run(None, feed)[0][0, -1].argmax()))
    return (time.perf_counter() - started) * 1000 / NEW_TOKENS


def genai_loop(folder: Path, prompt) -> float:
    import onnxruntime_genai as og

    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"].update(intra_op_num_threads=1, inter_op_num_threads=1)
    (folder / "genai_config.json").write_text(json.dumps(config))
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + NEW_TOKENS, do_sample=False)
    generator = og.Generator(model, params)
    started = time.perf_counter()
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    return (time.perf_counter() - started) * 1000 / NEW_TOKENS


def eager_loop(folder: Path, prompt) -> float:
    import torch
    import transformers as T

    torch.set_num_threads(1)
    model = T.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    ids = torch.tensor([prompt])
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                       do_sample=False)
    return (time.perf_counter() - started) * 1000 / NEW_TOKENS


def optimum_loop(folder: Path, prompt) -> float:
    """ms per new token of Optimum's ``ORTModelForCausalLM.generate`` on a folder (one thread)."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = ORTModelForCausalLM.from_pretrained(str(folder), use_cache=True, use_io_binding=False,
                                                session_options=options)
    ids = torch.tensor([prompt])
    started = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                   do_sample=False)
    return (time.perf_counter() - started) * 1000 / NEW_TOKENS


def in_child(function: str, *args: str, python: str = sys.executable) -> float:
    """One measurement in a fresh process (no session or allocator state shared between contenders)."""
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import generation as g; "
            f"print(json.dumps(g.{function}(*json.loads(sys.argv[1]))))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([python, "-c", code, json.dumps(list(args))], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-400:])
    return float(done.stdout.strip().splitlines()[-1])


def measure_cached(path: str, prompt: list[int], layout: dict) -> float:
    return cached_loop(session(Path(path)), prompt, layout)


def measure_uncached(path: str, prompt: list[int]) -> float:
    return uncached_loop(session(Path(path)), prompt)


def measure_genai(folder: str, prompt: list[int]) -> float:
    return genai_loop(Path(folder), prompt)


def measure_eager(folder: str, prompt: list[int]) -> float:
    return eager_loop(Path(folder), prompt)


def measure_optimum(folder: str, prompt: list[int]) -> float:
    return optimum_loop(Path(folder), prompt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gpt2-124m", "llama-50m"])
    parser.add_argument("--prompts", nargs="+", type=int, default=[16, 128])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--optimum-python", help="python of a scratch environment with optimum[onnxruntime]")
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out (e.g. 'tool uncached')")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="generation-bench-"))
    rows = []
    for name, folder in make_models(root, args.models).items():
        cached = build(folder, root / f"{name}-cached")
        uncached = build(folder, root / f"{name}-uncached", "task_spec.use_cache=false")
        layout = json.loads((cached / "metadata.json").read_text())["cache"]
        builder = optimum = None
        if not name.startswith("gpt2"):
            builder = build_with_model_builder(folder, root / f"{name}-builder")
        if args.optimum_python:
            optimum = build_with_optimum(args.optimum_python, folder, root / f"{name}-optimum")
        for length in args.prompts:
            prompt = [(7 * i + 3) % 500 for i in range(length)]
            contenders = {
                "tool cached (ORT loop)": lambda: in_child("measure_cached", str(cached / "model.onnx"), prompt, layout),
                "tool cached (GenAI)": lambda: in_child("measure_genai", str(cached), prompt),
                "tool uncached": lambda: in_child("measure_uncached", str(uncached / "model.onnx"), prompt),
                "eager generate": lambda: in_child("measure_eager", str(folder), prompt),
            }
            if builder is not None:
                contenders["model builder (GenAI)"] = lambda: in_child("measure_genai", str(builder), prompt)
            if optimum is not None:
                py = args.optimum_python
                contenders["optimum graph (ORT loop)"] = lambda: in_child(
                    "measure_cached", str(optimum / "model.onnx"), prompt, layout)
                contenders["optimum ORTModelForCausalLM"] = lambda: in_child("measure_optimum", str(optimum), prompt,
                                                                             python=py)
                contenders["tool folder in ORTModelForCausalLM"] = lambda: in_child("measure_optimum", str(cached),
                                                                                    prompt, python=py)
            for key in args.skip:
                contenders.pop(key, None)
            times: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(args.repeat):  # alternately
                for key, measure in contenders.items():
                    times[key].append(measure())
            base = statistics.median(times["tool cached (ORT loop)"])
            for key, values in times.items():
                med = statistics.median(values)
                rows.append([name, str(length), key, f"{med:.2f}", f"{med / base:.2f}",
                             f"{min(values):.2f}-{max(values):.2f}"])
            print(markdown_table(["model", "prompt", "contender", "ms/token (median)", "vs tool cached", "range"],
                                 rows), flush=True)


if __name__ == "__main__":
    main()
