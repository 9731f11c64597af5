"""Structured channel pruning of an eager torch classifier, and a short fine-tune to recover accuracy.

Pruning removes whole output channels (conv filters, linear units) together with every weight that
reads them, so the pruned network is a smaller dense network that any runtime runs faster — unlike
unstructured (mask) pruning, which keeps the tensor shapes and saves nothing on CPU. The dependency
tracking (which layers must shrink together: a conv's filters, the next layer's inputs, a flatten into
a linear layer) is Torch-Pruning's DepGraph (Fang et al., "DepGraph: Towards Any Structural Pruning",
CVPR 2023); channels are ranked by the L2 norm of their group's weights (Li et al., "Pruning Filters
for Efficient ConvNets", ICLR 2017, used L1).

``torch-pruning`` is an optional dependency (``pip install torch-pruning``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from assay.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from assay.data.dataset import Dataset

__all__ = ["count_parameters", "finetune", "output_layer", "prune_channels"]

EAGER_FIX = (
    "pass the eager module: the factory 'package.module:callable' with --weights (TorchScript and "
    "torch.export programs no longer hold nn.Conv/nn.Linear layers that can be pruned)"
)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in module.parameters())


def output_layer(module: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The layer producing the class scores: the last Conv/Linear whose output width is the number of
    outputs of ``module`` on ``example_input`` (else the last Linear). Pruning it would drop classes."""
    import torch
    from torch import nn

    was_training = module.training
    with torch.no_grad():
        out = module.eval()(example_input)
    module.train(was_training)
    num_outputs = int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.ndim >= 1 else None
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    if not layers:
        raise UserError("the model has no Conv or Linear layers to prune", where=type(module).__name__,
                        fix=EAGER_FIX)
    width = [m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers]
    matching = [m for m, w in zip(layers, width, strict=True) if w == num_outputs]
    if matching:
        return matching[-1]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    return (linears or layers)[-1]


def prune_channels(
    module: nn.Module,
    example_input: torch.Tensor,
    ratio: float,
    *,
    ignored: Sequence[nn.Module | str] | None = None,
) -> nn.Module:
    """A pruned copy of ``module`` with ``ratio`` of the channels of every prunable layer removed.

    Magnitude importance (group L2 norm), the same ratio in every layer (local pruning). The output layer
    (:func:`output_layer`) and the layers in ``ignored`` (modules or their names) keep their output
    channels. ``module`` itself is not modified. ``example_input`` is one batch used to trace the graph.
    """
    import torch
    from torch import nn

    if not 0.0 < ratio < 1.0:
        raise UserError(f"pruning ratio must lie strictly between 0 and 1, got {ratio}", where="prune ratio",
                        fix="give the fraction of channels to remove, e.g. 0.5")
    if isinstance(module, torch.jit.ScriptModule) or not any(
            isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) for m in module.modules()):
        raise UserError("the model has no nn.Conv/nn.Linear layers that structured pruning can shrink",
                        where=type(module).__name__, fix=EAGER_FIX)
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise UserError("structured pruning needs the optional package torch-pruning", where="prune",
                        fix="pip install torch-pruning") from exc

    pruned = copy.deepcopy(module).eval()
    example = example_input.detach().cpu()
    named = dict(pruned.named_modules())
    keep: list[nn.Module] = [output_layer(pruned, example)]
    for item in ignored or []:
        if isinstance(item, str):
            if item not in named or not item:
                raise UserError(f"the model has no module named {item!r}", where="ignored layers",
                                fix="name modules as model.named_modules() lists them")
            keep.append(named[item])
        else:  # a module of the original: find its copy by name
            name = next((n for n, m in module.named_modules() if m is item), None)
            if name is None:
                raise UserError("an ignored layer is not a submodule of the model", where="ignored layers",
                                fix="pass submodules of the model being pruned, or their names")
            keep.append(named[name])
    pruner = tp.pruner.BasePruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=keep,
    )
    with torch.no_grad():
        pruner.step()
    return pruned.eval()


def finetune(module: nn.Module, dataset: Dataset, epochs: int, seed: int, *, lr: float = 1e-3,
             batch_size: int = 64) -> nn.Module:
    """Train ``module`` in place for ``epochs`` passes over ``dataset`` (Adam, cross-entropy, shuffled
    mini-batches, seeded); returns it in eval mode. Recovers most of the accuracy pruning costs."""
    import torch
    from torch import nn

    from assay.models.torch_models import to_torch_inputs

    if epochs < 0:
        raise UserError(f"fine-tune epochs must be >= 0, got {epochs}", where="finetune_epochs",
                        fix="give 0 (no fine-tune) or a positive number of epochs")
    if epochs == 0:
        return module.eval()
    if dataset.y is None:
        raise UserError("fine-tuning needs labels but the training data has none", where=dataset.source,
                        fix="pass labelled training data, or set the fine-tune epochs to 0")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.from_numpy(np.asarray(dataset.y, dtype=np.int64))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        for index in torch.randperm(len(dataset), generator=generator).split(batch_size):
            inputs = to_torch_inputs(dataset.x[index.numpy()])
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(inputs), targets[index]).backward()
            optimizer.step()
    return module.eval()
