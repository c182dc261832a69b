"""A packed row's attention computed example by example gives what transformers' block-diagonal
mask gives, forward and backward, with sliding windows shorter and longer than the examples;
outside a packed forward the switched model is transformers' sdpa unchanged."""

from __future__ import annotations

import pytest

from finetune.attention import NAME, packed_lengths, packed_rows, use_packed_attention
from finetune.data import PackedCollator, PaddedCollator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gemma3(window: int):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=window,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        max_position_embeddings=256, attn_implementation="sdpa")
    return Gemma3ForCausalLM(cfg).float().eval()


def _llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).float().eval()


def _examples(lengths, seed=1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, 97, (n,), generator=g).tolist(),
             "labels": torch.randint(3, 97, (n,), generator=g).tolist()} for n in lengths]


def test_packed_lengths():
    import torch

    assert packed_lengths(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])) == (3, 2, 4)
    assert packed_lengths(torch.tensor([[0, 1, 2, 3]])) is None  # one example: nothing to split
    assert packed_lengths(torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]])) is None  # not one row
    assert packed_lengths(torch.tensor([[1, 2, 0, 1]])) is None  # does not start an example
    assert packed_lengths(torch.tensor([[0, 2, 0, 1]])) is None  # not consecutive
    assert packed_lengths(None) is None


@pytest.mark.parametrize("make", [lambda: _gemma3(window=4), lambda: _gemma3(window=64), _llama],
                         ids=["gemma3-window-shorter", "gemma3-window-longer", "llama"])
def test_per_example_attention_equals_the_block_diagonal_mask(make):
    import torch

    examples = _examples([7, 12, 3, 9])
    batch = PackedCollator()(examples)
    # as training calls the model: without a cache (with one, transformers does not look for
    # packed rows)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"],
              "use_cache": False}

    reference = make()  # transformers' sdpa: one block-diagonal mask over the row
    switched = make()
    switched.load_state_dict(reference.state_dict())
    assert use_packed_attention(switched)
    assert switched.config._attn_implementation == NAME

    ref_logits = reference(**inputs).logits
    ref_logits.sum().backward()
    with packed_rows(inputs["position_ids"]) as lengths:
        assert lengths == (7, 12, 3, 9)
        logits = switched(**inputs).logits
    logits.sum().backward()
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    # and each example alone, unpacked, gives its slice of the row
    start = 0
    for ex in examples:
        n = len(ex["input_ids"])
        alone = reference(input_ids=torch.tensor([ex["input_ids"]])).logits
        assert torch.allclose(logits[:, start:start + n], alone, atol=1e-5)
        start += n
    for (name, p), q in zip(reference.named_parameters(), switched.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-4), name


@pytest.mark.parametrize("make", [lambda: _gemma3(window=4), _llama], ids=["gemma3", "llama"])
def test_layers_recomputed_in_the_backward_pass_attend_example_by_example(make):
    """Gradient checkpointing recomputes a layer's forward in the backward pass, outside
    packed_rows: the layer reads the row's examples from its positions."""
    import torch

    from finetune.loss import response_loss

    reference, switched = make(), make()
    switched.load_state_dict(reference.state_dict())
    use_packed_attention(switched)
    for model in (reference, switched):
        model.train()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = PackedCollator()(_examples([7, 12, 3, 9]))
    loss_ref, _ = response_loss(reference, batch)
    loss_ref.backward()
    loss, _ = response_loss(switched, batch)
    loss.backward()
    assert loss.item() == pytest.approx(loss_ref.item(), abs=1e-5)
    for (name, p), q in zip(reference.named_parameters(), switched.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-4), name


def test_without_a_packed_row_the_switched_model_is_sdpa():
    import torch

    reference, switched = _gemma3(window=4), _gemma3(window=4)
    switched.load_state_dict(reference.state_dict())
    use_packed_attention(switched)
    examples = _examples([5, 11])
    padded = PaddedCollator(0)(examples)
    padded.pop("labels")
    with packed_rows(None):  # a padded batch: the per-example path stays off
        assert torch.allclose(switched(**padded).logits, reference(**padded).logits, atol=1e-6)
    prompt = torch.tensor([examples[1]["input_ids"]])
    ref = reference.generate(prompt, max_new_tokens=6, do_sample=False)
    out = switched.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, ref)


def test_the_training_loss_takes_the_per_example_path():
    import torch

    from finetune import attention
    from finetune.loss import response_loss

    model = _gemma3(window=4)
    use_packed_attention(model)
    seen = []
    real = attention._attention

    def spy(module, query, *args, **kwargs):
        seen.append(attention._LENGTHS.get())
        return real(module, query, *args, **kwargs)

    from transformers import AttentionInterface

    AttentionInterface.register(NAME, spy)
    try:
        batch = PackedCollator()(_examples([6, 10, 4]))
        with torch.no_grad():
            loss, count = response_loss(model, batch)
    finally:
        AttentionInterface.register(NAME, real)
    assert seen and all(s == (6, 10, 4) for s in seen)
    assert attention._LENGTHS.get() is None  # reset after the forward
    assert torch.isfinite(loss) and count.item() > 0


def test_only_sdpa_models_are_switched():
    from transformers import LlamaConfig, LlamaForCausalLM

    eager = LlamaForCausalLM(LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4, attn_implementation="eager"))
    assert not use_packed_attention(eager)
    assert eager.config._attn_implementation == "eager"
