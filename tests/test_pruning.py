"""Structured channel pruning (Torch-Pruning) and the fine-tune that follows it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from assay.compress.pruning import count_parameters, finetune, output_layer, prune_channels
from assay.data.dataset import Dataset
from assay.data.loader import load_data
from assay.demo import DigitsCNN
from assay.errors import UserError

EXAMPLE = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _flops(module: nn.Module) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(EXAMPLE[:1])
    return counter.get_total_flops()


def _net(seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    return DigitsCNN().eval()


def test_half_pruning_cuts_counted_flops_by_at_least_40_percent():
    net = _net()
    pruned = prune_channels(net, EXAMPLE, 0.5)
    before, after = _flops(net), _flops(pruned)
    assert after <= 0.6 * before
    # every prunable layer lost half its channels; the output layer kept all 10 classes
    assert [pruned.features[0].out_channels, pruned.features[2].out_channels, pruned.fc1.out_features] == [8, 16, 32]
    assert pruned.fc2.out_features == 10 and pruned(EXAMPLE).shape == (2, 10)


def test_the_original_module_is_untouched():
    net = _net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    prune_channels(net, EXAMPLE, 0.5)
    assert net.fc1.out_features == 64
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key])


def _zero_half(net: DigitsCNN) -> None:
    """Make channels 0..k/2 of every prunable group contribute exactly nothing (weights in and out zero)."""
    conv1, conv2 = net.features[0], net.features[2]
    with torch.no_grad():
        conv1.weight[:8] = 0
        conv1.bias[:8] = 0
        conv2.weight[:, :8] = 0
        conv2.weight[:16] = 0
        conv2.bias[:16] = 0
        net.fc1.weight.view(64, 32, 16)[:, :16] = 0  # fc1 reads conv2's channels through the flatten
        net.fc1.weight[:32] = 0
        net.fc1.bias[:32] = 0
        net.fc2.weight[:, :32] = 0


def test_magnitude_importance_removes_the_channels_that_do_nothing():
    """With half of every group's weights zero, pruning 50% must remove exactly those: outputs unchanged."""
    net = _net(1)
    _zero_half(net)
    pruned = prune_channels(net, EXAMPLE, 0.5)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), net(x), atol=1e-5, rtol=1e-5)
    assert count_parameters(pruned) < count_parameters(net) / 3


def test_ignored_layers_keep_their_channels():
    net = _net()
    pruned = prune_channels(net, EXAMPLE, 0.5, ignored=["fc1"])
    assert pruned.fc1.out_features == 64 and pruned.features[0].out_channels == 8
    by_module = prune_channels(net, EXAMPLE, 0.5, ignored=[net.features[0]])
    assert by_module.features[0].out_channels == 16
    with pytest.raises(UserError, match="no module named 'head'"):
        prune_channels(net, EXAMPLE, 0.5, ignored=["head"])


def test_output_layer_is_the_one_producing_the_classes():
    net = _net()
    assert output_layer(net, EXAMPLE) is net.fc2
    assert net.training is False


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_outside_the_open_unit_interval_is_refused(ratio):
    with pytest.raises(UserError, match="strictly between 0 and 1"):
        prune_channels(_net(), EXAMPLE, ratio)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_compiled_modules_are_refused_with_the_fix():
    scripted = torch.jit.script(_net())
    with pytest.raises(UserError) as err:
        prune_channels(scripted, EXAMPLE, 0.5)
    assert "factory" in err.value.fix


def _digits_subset(n: int = 400) -> Dataset:
    return load_data("digits:train").subset(np.arange(n))


def test_finetune_is_deterministic_and_lowers_training_loss():
    data = _digits_subset()
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = finetune(prune_channels(_net(), EXAMPLE, 0.5), data, epochs=10, seed=7)
        second = finetune(prune_channels(_net(), EXAMPLE, 0.5), data, epochs=10, seed=7)
    finally:
        torch.set_num_threads(threads)
    untrained = prune_channels(_net(), EXAMPLE, 0.5)
    with torch.no_grad():
        loss_before = nn.functional.cross_entropy(untrained(x), y).item()
        loss_after = nn.functional.cross_entropy(first(x), y).item()
    assert loss_after < 0.5 * loss_before
    assert not first.training
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_finetune_needs_labels_unless_skipped():
    unlabeled = Dataset(x=np.zeros((4, 1, 8, 8), np.float32), y=None, ids=np.arange(4), modality="image",
                        name="u", source="u.npz")
    net = _net()
    with pytest.raises(UserError, match="needs labels"):
        finetune(net, unlabeled, epochs=1, seed=0)
    assert finetune(net, unlabeled, epochs=0, seed=0) is net
