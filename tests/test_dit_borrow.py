"""The causal DiT on borrowed layers (:mod:`causal_forcing_core.dit_borrow`): the same video as the owner's weights
give, no weight copied, and a weight the owner changes or replaces afterwards is the one used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from causal_forcing_core.config import TINY
from causal_forcing_core.dit_borrow import borrow_layers, shares_weights
from causal_forcing_core.errors import CheckpointError
from tiny import tiny_model, tiny_stream


def _borrowed(source: nn.Module, **kwargs: object):
    return borrow_layers(source, TINY, device=torch.device("cpu"), compute_dtype=torch.float32, **kwargs)  # type: ignore[arg-type]


def _video(model, chunks: int = 2) -> torch.Tensor:
    return tiny_stream(model, size=32).generate(chunks).latents


def test_borrowed_model_makes_the_owners_video_and_copies_nothing():
    source = tiny_model(seed=3)
    borrowed = _borrowed(source)
    assert shares_weights(borrowed, source)
    assert {id(p) for p in borrowed.parameters()} < {id(p) for p in source.parameters()}  # the tables stay the owner's
    assert borrowed.blocks[0].self_attn.q is source.blocks[0].self_attn.q
    assert torch.equal(_video(borrowed), _video(source))


def test_the_owners_layers_run_their_own_forward():
    source = tiny_model(seed=3)
    calls = []
    layer = source.blocks[1].ffn[2]
    layer.register_forward_hook(lambda *_: calls.append(1))
    _video(_borrowed(source), chunks=1)
    assert calls, "the borrowed model did not call the owner's layer"


def test_a_weight_replaced_by_the_owner_after_borrowing_is_used():
    source = tiny_model(seed=3)
    borrowed = _borrowed(source)
    before = _video(borrowed)
    # the way a patcher applies a weight patch: a new Parameter object on the owner's module, and a new table
    q = source.blocks[0].self_attn.q
    q.weight = nn.Parameter(q.weight.detach() * 1.5)
    source.blocks[1].modulation = nn.Parameter(source.blocks[1].modulation.detach() + 0.3)
    after = _video(borrowed)
    assert torch.equal(after, _video(source))
    assert (after - before).abs().max() > 1e-3


def test_modulation_kept_in_another_dtype_is_cast_at_use():
    source = tiny_model(seed=3)
    reference = _video(source)
    for block in source.blocks:  # an offloaded / low-precision table, as a partially loaded owner keeps it
        block.modulation = nn.Parameter(block.modulation.detach().double())
    assert torch.equal(_video(_borrowed(source)), reference)


def test_patch_embedding_fed_in_its_own_dtype():
    """ComfyUI's Wan keeps the patch embedding in float32 whatever the model's dtype: the borrowed model feeds it
    float32 and carries on in the compute dtype."""
    source = tiny_model(seed=3)
    seen = []
    source.patch_embedding.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    borrowed = borrow_layers(source, TINY, device=torch.device("cpu"), compute_dtype=torch.bfloat16, patch_dtype=torch.float32)
    x = torch.randn(1, TINY.in_dim, 3, 4, 4)
    tokens, _ = borrowed._patchify(x)
    assert seen == [torch.float32] and tokens.dtype == torch.bfloat16


def test_missing_and_misshapen_layers_are_listed():
    source = tiny_model(seed=3)
    del source.blocks[1].cross_attn.o
    source.head.head = nn.Linear(TINY.dim, 7)
    with pytest.raises(CheckpointError) as err:
        _borrowed(source)
    message = str(err.value)
    assert "blocks.1.cross_attn.o (missing)" in message
    assert "head.head.weight (shape [7, 64], expected" in message
