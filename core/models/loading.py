"""Load the shared base model once; switch a LoRA adapter on and off on top of it.

The comparison runs four arms (base, rag, finetuned, finetuned+rag) on ONE copy of the base
weights with one quantisation and one set of decoding settings::

    loaded = load_base(cfg.model)                  # Loaded(model, tokenizer, info)
    tuned = attach_adapter(loaded, "adapters/amostra")  # refuses an adapter of another base
    prompt = tuned.adapter.template.render(question)    # the template it was trained with
    answer_ft = generate(tuned.model, ...)               # adapter on
    with tuned.adapter_disabled():                       # adapter off: the base model
        answer_base = generate(tuned.model, ...)

Device and precision are chosen automatically (CUDA if present, else CPU; bf16 where the
hardware has it) and can be overridden; ``quantize`` is 4bit (NF4, double quantisation, bf16
compute), 8bit or none. The tokenizer is checked at load: a pad token distinct from EOS, BOS
where the model needs it, EOS known to generation.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.models.registry import ModelNotFound, ModelSource, resolve

if TYPE_CHECKING:
    from core.config import ModelConfig
    from core.prompts import PromptTemplate

log = logging.getLogger(__name__)

# Tokens that can serve as padding when a tokenizer has none (first match wins).
PAD_CANDIDATES = ("<pad>", "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>",
                  "<|finetune_right_pad|>", "<|reserved_special_token_0|>")
ADDED_PAD = "<|pad|>"
# Model families trained with a BOS token in front of every text.
BOS_FAMILIES = ("gemma", "llama")


class AdapterMismatch(UserError, ValueError):
    """The adapter was trained on another base model (or is no adapter at all)."""


@dataclass
class ModelInfo:
    """What was loaded, recorded in every adapter and run so results can be traced."""

    base: str  # as the user named it: registry name, folder, hub id
    kind: str  # registry | folder | hub
    path: str | None  # the folder the weights came from (None: the hub cache)
    architecture: str
    fingerprint: str  # architecture + a sample of the weights: identifies the base model
    quantize: str
    device: str
    dtype: str
    parameters: int
    tokenizer: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0
    cpu_capability: str | None = None  # torch's vector ISA on this CPU: AVX2, AVX512, ...
    bf16_native: bool | None = None  # the CPU computes bf16 natively (AVX512-BF16 / AMX)
    unpacked_on_cpu: bool = False  # 4-bit weights unpacked once for answering (unpack_4bit)
    head_fp16: bool = False  # the output head's product by fbgemm's fp16-weight kernel (pack_head_fp16)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def compute_line(self) -> str:
        """One line that says where and in what precision the model computes."""
        return compute_line(self.device, self.dtype, self.quantize, self.cpu_capability,
                            self.bf16_native)


def compute_line(device: str, dtype: str, quantize: str, capability: str | None = None,
                 bf16_native: bool | None = None) -> str:
    where = device
    if device == "cpu" and capability:
        where = f"cpu ({capability}, {'native bf16' if bf16_native else 'no native bf16'})"
    weights = {"4bit": "4-bit NF4 weights", "8bit": "8-bit weights"}.get(quantize,
                                                                        "unquantised weights")
    return f"compute: {where} · {dtype} · {weights}"


def compute_plan(cfg: ModelConfig) -> str:
    """:func:`compute_line` of what :func:`load_base` will choose, without loading anything."""
    device = resolve_device(cfg.device)
    dtype = str(resolve_dtype(cfg.dtype, device)).replace("torch.", "")
    cpu = device == "cpu"
    return compute_line(device, dtype, cfg.quantize, cpu_capability() if cpu else None,
                        cpu_has_native_bf16() if cpu else None)


@dataclass
class AdapterInfo:
    """An attached adapter: its folder, the template it was trained with, its summary, and
    its name on the PEFT model (the first is ``default``)."""

    path: str
    template: PromptTemplate
    summary: dict[str, Any]
    name: str = "default"


@dataclass
class Loaded:
    """A loaded model, its tokenizer (pad != eos, padding on the left for generation) and
    what was loaded. With adapters attached, ``model`` is the PEFT model; ``adapter`` is the
    first one attached and ``adapters`` every one, by name."""

    model: Any
    tokenizer: Any
    info: ModelInfo
    adapter: AdapterInfo | None = None
    adapters: dict[str, AdapterInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.adapter is not None and not self.adapters:
            self.adapters = {self.adapter.name: self.adapter}

    def adapter_disabled(self):
        """Context in which the model answers as the plain base (no-op without adapter)."""
        if not self.adapters:
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    def use_adapter(self, name: str) -> None:
        """Switch the adapter called ``name`` on (the others off): one at a time."""
        if name not in self.adapters:
            raise KeyError(f"no adapter {name!r} is loaded; loaded: {', '.join(self.adapters)}")
        if getattr(self.model, "active_adapter", name) != name:
            self.model.set_adapter(name)


# -- device, precision, quantisation ----------------------------------------------------------

def resolve_device(device: str = "auto") -> str:
    """``auto`` -> this process's CUDA device if there is one, else ``cpu``."""
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        return device
    if torch.cuda.is_available():
        # Under `accelerate launch` / torchrun every process takes its own GPU.
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def cpu_capability() -> str:
    """torch's vector instruction set on this CPU (``AVX2``, ``AVX512``, ``DEFAULT`` ...);
    ``ATEN_CPU_CAPABILITY`` lowers it."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN sees it.

    Without it torch emulates bf16: a matmul is ~200x slower than in fp32 (BENCHMARKS.md), so
    nothing may compute in bf16 there. ``ONEDNN_MAX_CPU_ISA=AVX2`` makes oneDNN (and so this
    probe) answer as such a CPU would; if the probe is missing, only an AVX512 CPU can be one.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str, device: str):
    """``auto`` -> bf16 where the hardware computes in it (recent GPUs, CPUs with AVX512-BF16
    or AMX), fp16 on older GPUs, else fp32. bf16 asked for on a CPU without native bf16 is
    computed in fp32 instead, with a warning: emulated bf16 is two orders of magnitude slower
    and gives no memory saving worth it at these model sizes."""
    import torch

    if device == "cpu" and dtype == "bfloat16" and not cpu_has_native_bf16():
        log.warning("model.dtype=bfloat16, but this CPU (%s) has no native bf16: computing in "
                    "float32 (emulated bf16 is ~200x slower)", cpu_capability())
        return torch.float32
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def quantization_config(quantize: str, compute_dtype):
    """bitsandbytes settings: NF4 + double quantisation with ``compute_dtype`` compute (QLoRA)."""
    from transformers import BitsAndBytesConfig

    if quantize == "none":
        return None
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantize != "4bit":
        raise ValueError(f"quantize must be 4bit, 8bit or none, not {quantize!r}")
    # FSDP shards the packed 4-bit weights like any other tensor only if they are stored in
    # the dtype of the rest of the model.
    extra = {"bnb_4bit_quant_storage": compute_dtype} if under_fsdp() else {}
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype, **extra)


# -- loading ----------------------------------------------------------------------------------

def source_path(source: ModelSource) -> str:
    """What ``from_pretrained`` gets: the (converted) folder, or the hub id."""
    if source.kind == "registry":
        from core.models.convert import ensure_converted

        return str(ensure_converted(source.spec))
    return str(source.path) if source.path else source.name


def under_fsdp() -> bool:
    """Launched by `accelerate launch` with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in {"1", "true"}


def load_base(cfg: ModelConfig, *, device: str | None = None) -> Loaded:
    """Load the base model and tokenizer named by ``cfg`` (see :class:`core.config.ModelConfig`).

    Raises :class:`ModelNotFound` with a message that says what to install or where to put
    the files when the model cannot be found.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    source = resolve(cfg.base, cfg.revision)
    name_or_path = source_path(source)
    device = resolve_device(device or cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    quant = quantization_config(cfg.quantize, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": cfg.revision}
    if cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = cfg.attn_implementation
    fsdp = under_fsdp()
    if quant is not None:
        kwargs["quantization_config"] = quant
        if not fsdp:  # FSDP places the shards itself
            kwargs["device_map"] = {"": device}
    log.debug("Loading %s (%s, %s, %s)", cfg.base, device, str(dtype).replace("torch.", ""),
              "no quantisation" if quant is None else cfg.quantize)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=cfg.revision)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except OSError as exc:
        raise ModelNotFound(f"could not load model {cfg.base!r} from {name_or_path}: {exc}") from None
    if quant is None and not fsdp:
        model.to(device)
    # Training, and adapters on top, need the plain 4-bit layout (see the function).
    set_cpu_4bit_inference_layout(model, False)
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    model.eval()
    needs_bos = source.needs_bos
    if needs_bos is None:
        needs_bos = model.config.model_type.startswith(BOS_FAMILIES)
    tok_info = prepare_tokenizer(tokenizer, model, needs_bos=needs_bos)
    info = ModelInfo(
        base=source.name, kind=source.kind, path=name_or_path if source.kind != "hub" else None,
        architecture=model.config.model_type, fingerprint=model_fingerprint(model),
        quantize=cfg.quantize, device=device, dtype=str(dtype).replace("torch.", ""),
        parameters=sum(p.numel() for p in model.parameters()), tokenizer=tok_info,
        load_seconds=round(time.monotonic() - start, 1),
        cpu_capability=cpu_capability() if device == "cpu" else None,
        bf16_native=cpu_has_native_bf16() if device == "cpu" else None)
    if info.quantize == "4bit":
        # Linear4bit packs two weights per byte: count the logical parameters.
        info.parameters = _logical_parameters(model)
    log.info("%s loaded in %.1f s — %s", cfg.base, info.load_seconds, info.compute_line())
    return Loaded(model=model, tokenizer=tokenizer, info=info)


def unpack_4bit(model, max_bytes: int | None = None) -> int:
    """Replace every bitsandbytes 4-bit linear layer by a plain ``torch.nn.Linear`` holding its
    weights unpacked into the layer's compute dtype: the same NF4 values, so the same
    arithmetic as the 4-bit layer's forward (which unpacks them at every call), without the
    unpacking. For answering on a CPU, where unpacking is most of a decoding step; never for
    training (QLoRA keeps the weights packed). Nothing is changed when the unpacked weights
    would take more than ``max_bytes``. Returns the layers replaced.
    """
    import torch

    try:
        import bitsandbytes.functional as bnb_f
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    layers = [(parent, name, child) for parent in model.modules()
              for name, child in parent.named_children() if isinstance(child, Linear4bit)]
    if not layers:
        return 0
    if max_bytes is not None:
        size = sum(c.in_features * c.out_features * torch.finfo(c.compute_dtype or torch.float32).bits // 8
                   for _, _, c in layers)
        if size > max_bytes:
            log.info("4-bit weights kept packed: unpacked they would take %.1f GB (more than "
                     "%.1f GB)", size / 1e9, max_bytes / 1e9)
            return 0
    with torch.no_grad():
        for parent, name, child in layers:
            dtype = child.compute_dtype or torch.float32
            weight = bnb_f.dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype)
            # built on the meta device and given the unpacked tensor: no random initialisation
            # and no second copy of each weight
            dense = torch.nn.Linear(child.in_features, child.out_features,
                                    bias=child.bias is not None, device="meta", dtype=dtype)
            dense.weight = torch.nn.Parameter(
                weight.reshape(child.out_features, child.in_features).contiguous(),
                requires_grad=False)
            if child.bias is not None:
                dense.bias = torch.nn.Parameter(child.bias.detach().to(dtype), requires_grad=False)
            setattr(parent, name, dense)
    return len(layers)


# fbgemm's fp16-weight kernel; torch marks it deprecated (kept while torch is pinned: it is the
# fast fp32-activation product a CPU has for a 262k-row head; without it the plain head is used)
_FP16_KERNEL = "fbgemm_linear_fp16_weight_fp32_activation"


def _fp16_kernel_available() -> bool:
    import torch

    return (hasattr(torch, "fbgemm_pack_gemm_matrix_fp16") and hasattr(torch, _FP16_KERNEL)
            and "fbgemm" in torch.backends.quantized.supported_engines)


def _fp16_exact(weight, rows: int = 16384) -> bool:
    """Whether every value of ``weight`` is an fp16 value (checked in slices of ``rows``)."""
    import torch

    return all(torch.equal(part.half().float(), part) for part in weight.split(rows))


@functools.cache
def _fp16_head_class():
    """The head module of :func:`pack_head_fp16` (made on first use: torch is imported late)."""
    import warnings

    import torch

    # packing and the kernel warn at every call that they are deprecated: said once here, in
    # the docs
    warnings.filterwarnings(
        "ignore", message=f"(fbgemm_pack_gemm_matrix_fp16|{_FP16_KERNEL}) is deprecated")

    class Fp16Head(torch.nn.Module):
        """An output head whose product is fbgemm's: fp32 activations and accumulation, the
        weight packed in fp16 (the same values, when they are all fp16 values). ``weight``
        stays the original (tied) parameter, for whatever reads it."""

        def __init__(self, linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.weight = linear.weight
            bias = linear.bias.detach() if linear.bias is not None else None
            self._bias = bias if bias is not None else torch.zeros(self.out_features)
            self._packed = torch.fbgemm_pack_gemm_matrix_fp16(linear.weight.detach())

        def forward(self, x):
            flat = x.reshape(-1, x.shape[-1])
            if flat.dtype != torch.float32:
                flat = flat.float()
            out = getattr(torch, _FP16_KERNEL)(flat, self._packed, self._bias)
            return out.reshape(*x.shape[:-1], self.out_features)

    return Fp16Head


def pack_head_fp16(model) -> bool:
    """On a CPU computing in fp32, the output head's product by fbgemm's fp16-weight kernel:
    for the few rows of a decoding step it is 3-4x faster than the fp32 product (a step of
    Gemma 3 270M spent half its time in its 262k x 640 head). Done only when every weight of
    the head is an fp16 value (a checkpoint stored in bf16 or fp16 and upcast, as the bundled
    models are), so the head computes with the same weights: only the order of the sums
    differs. Never for training. Returns whether the head was replaced."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.dtype != torch.float32 \
            or head.weight.device.type != "cpu" or not _fp16_kernel_available():
        return False
    with torch.no_grad():
        if not _fp16_exact(head.weight.detach()):
            log.info("output head kept in fp32: its weights are not all fp16 values")
            return False
        base.set_output_embeddings(_fp16_head_class()(head))
    return True


def _contiguous_input(module, args):
    """Forward pre-hook of the output head: an input laid out densely.

    Generation feeds the head a strided slice (the last position of each row). On a frozen
    weight (any base under a PEFT adapter), torch 2.13 computes ``linear`` of a strided 3-D
    input as a batched matmul that first copies the weight once per row: 2.7 GB and seconds
    per step for 8 prompts on Gemma's 262k x 640 head. A single prompt's slice counts as
    "contiguous" (its length-1 dimension's stride is ignored) yet takes the same path: 320 MiB
    and ~0.4 s at every prefill. An input with dense strides takes the plain matrix product.
    """
    if args and hasattr(args[0], "stride") and args[0].stride() != dense_strides(args[0].shape):
        import torch

        return (args[0].clone(memory_format=torch.contiguous_format), *args[1:])
    return None


def dense_strides(shape) -> tuple[int, ...]:
    """The strides of a freshly allocated row-major tensor of this shape."""
    strides, step = [], 1
    for size in reversed(tuple(shape)):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def set_cpu_4bit_inference_layout(model, enabled: bool) -> int:
    """Allow (or forbid and undo) bitsandbytes' CPU inference layout of 4-bit weights.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit layer's weights for a faster
    kernel the first time the layer runs in eval mode without gradients, and keeps that layout
    for good. Three problems: the fast kernel has no backward, so training after any
    evaluation silently loses the gradients that flow through the frozen 4-bit layers; under
    a PEFT adapter the repacking keeps the old weights too (+3 GB for Gemma 3 270M); and it
    gains little (generation 3.1 s instead of 3.8 s in a test of 8 x 48 tokens). So
    :func:`load_base` forbids it for every model. Returns the layers changed.
    """
    try:
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse, has_avx512bf16
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # another bitsandbytes version: nothing of the kind to undo
        return 0
    changed = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit) or not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        if enabled:
            module.support_avx512bf16_for_cpu = has_avx512bf16()
            continue
        module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = (
                _convert_weight_packed_for_cpu_inverse(module.weight.data, state))
            changed += 1
    return changed


def _logical_parameters(model) -> int:
    total = 0
    for p in model.parameters():
        shape = getattr(p, "quant_state", None)
        total += shape.shape.numel() if shape is not None else p.numel()
    return total


def prepare_tokenizer(tokenizer, model, needs_bos: bool) -> dict[str, Any]:
    """Tokenizer hygiene: pad distinct from EOS, BOS where needed, EOS known to generation.

    The pad token is an existing unused special token where there is one (``<pad>``, the
    reserved pad of Llama 3, ``<unk>``); only if none exists is ``<|pad|>`` added and the
    embeddings resized. Padding is on the left (generation); training pads on its own.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: the model could never learn to stop")
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    added_pad = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == eos:
        vocab = tokenizer.get_vocab()
        candidates = [*PAD_CANDIDATES, tokenizer.unk_token]
        chosen = next((c for c in candidates if c and c in vocab and vocab[c] not in (eos, bos)),
                      None)
        if chosen is None:
            tokenizer.add_special_tokens({"pad_token": ADDED_PAD})
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            added_pad = True
            log.warning("the tokenizer had no pad token distinct from EOS: added %s", ADDED_PAD)
        else:
            tokenizer.pad_token = chosen
    if needs_bos and bos is not None and tokenizer("a").input_ids[:1] != [bos]:
        tokenizer.add_bos_token = True
    if tokenizer("a").input_ids[-1:] == [eos] and hasattr(tokenizer, "add_eos_token"):
        tokenizer.add_eos_token = False  # a prompt must not end with EOS
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id
    model.config.pad_token_id = pad
    gen = model.generation_config
    gen.pad_token_id = pad
    eos_ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else (
        [] if gen.eos_token_id is None else [gen.eos_token_id])
    if eos not in eos_ids:
        gen.eos_token_id = [eos, *eos_ids] if eos_ids else eos
    adds_bos = bos is not None and tokenizer("a").input_ids[:1] == [bos]
    return {
        "eos": tokenizer.eos_token, "eos_id": eos, "pad": tokenizer.pad_token, "pad_id": pad,
        "bos": tokenizer.bos_token, "bos_id": bos, "adds_bos": adds_bos, "added_pad": added_pad,
        "vocab": len(tokenizer),
    }


def model_fingerprint(model) -> str:
    """A short hash that identifies the base weights, whatever the dtype or quantisation.

    Hashes the architecture and the first rows of the input embedding (never quantised by
    bitsandbytes) rounded to bf16, so the same model loaded in fp32, bf16 or 4-bit gives the
    same value and another model of the same shape does not.
    """
    import torch

    cfg = model.config.get_text_config()
    arch = {k: getattr(cfg, k, None) for k in (
        "model_type", "hidden_size", "num_hidden_layers", "intermediate_size",
        "num_attention_heads", "num_key_value_heads")}
    weight = model.get_input_embeddings().weight
    rows = weight[: min(64, weight.shape[0])].detach().to("cpu", torch.bfloat16)
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    h.update(rows.contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


# -- adapters ---------------------------------------------------------------------------------

ADAPTER_SUMMARY = "summary.json"


def read_adapter_summary(adapter_dir: str | Path) -> dict[str, Any]:
    """The summary of a compara adapter folder; refuses a folder that is not one."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise AdapterMismatch(f"{adapter_dir} is not an adapter folder (no adapter_config.json); "
                              "pass the --out folder of `compara finetune`")
    path = adapter_dir / ADAPTER_SUMMARY
    if not path.is_file():
        raise AdapterMismatch(f"{adapter_dir} has no {ADAPTER_SUMMARY}: it was not written by "
                              "`compara finetune` (or the run did not finish), so its base model "
                              "cannot be checked")
    return json.loads(path.read_text(encoding="utf-8"))


def check_same_base(summary: dict[str, Any], info: ModelInfo, adapter_dir: str | Path) -> None:
    trained = summary.get("base", {})
    if trained.get("fingerprint") != info.fingerprint:
        raise AdapterMismatch(
            f"the adapter in {adapter_dir} was trained on {trained.get('base')!r} "
            f"(fingerprint {trained.get('fingerprint')}), but the loaded base model is "
            f"{info.base!r} (fingerprint {info.fingerprint}); load the base it was trained on "
            f"(--base {trained.get('base')})")
    tok_then, tok_now = trained.get("tokenizer", {}), info.tokenizer
    for key in ("vocab", "eos_id", "pad_id", "bos_id", "adds_bos"):
        if key in tok_then and tok_then[key] != tok_now.get(key):
            raise AdapterMismatch(
                f"the adapter in {adapter_dir} was trained with a different tokenizer setup "
                f"({key}: {tok_then[key]!r} then, {tok_now.get(key)!r} now)")
    if trained.get("quantize") and trained["quantize"] != info.quantize:
        log.warning("the adapter was trained on a %s base; it is now applied to a %s one",
                    trained["quantize"], info.quantize)


def attach_adapter(loaded: Loaded, adapter_dir: str | Path, *, trainable: bool = False) -> Loaded:
    """Wrap the base in the LoRA adapter of ``adapter_dir`` (the weights are shared, not copied);
    on a model that already has adapters, add this one beside them (``adapter1``, ...).

    Checks that the adapter was trained from the same base model and tokenizer setup (raises
    :class:`AdapterMismatch` otherwise) and returns a :class:`Loaded` whose ``model`` is the
    PEFT model, with the adapter's stored prompt template and summary. Use
    ``loaded.adapter_disabled()`` for the base arms and ``loaded.use_adapter(name)`` to switch
    between adapters; only the adapters' own weights are added to memory.
    """
    from peft import PeftModel

    from core.prompts import PromptTemplate

    adapter_dir = Path(adapter_dir)
    summary = read_adapter_summary(adapter_dir)
    check_same_base(summary, loaded.info, adapter_dir)
    template = PromptTemplate.from_dir(adapter_dir)
    if summary.get("template", {}).get("fingerprint") not in (None, template.fingerprint):
        raise AdapterMismatch(f"{adapter_dir}/prompt_template.json differs from the template the "
                              "adapter was trained with (fingerprints differ)")
    if loaded.adapters:
        name = f"adapter{len(loaded.adapters)}"
        loaded.model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=trainable)
        loaded.model.eval()
        info = AdapterInfo(path=str(adapter_dir), template=template, summary=summary, name=name)
        return Loaded(model=loaded.model, tokenizer=loaded.tokenizer, info=loaded.info,
                      adapter=loaded.adapter, adapters={**loaded.adapters, name: info})
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir), is_trainable=trainable)
    model.eval()
    return Loaded(model=model, tokenizer=loaded.tokenizer, info=loaded.info,
                  adapter=AdapterInfo(path=str(adapter_dir), template=template, summary=summary))
