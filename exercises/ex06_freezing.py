"""Exercise 6: freeze a pretrained autoencoder and prove it stayed frozen (Sec. III-C). See exercises/README.md.

Write freeze and changed_tensors, then check them with one fusion-style optimizer step:
    python exercises/check.py 6
(a solution is in exercises/solutions/ex06_freezing.py: try first)
"""
import torch


def freeze(module):
    """Freeze a pretrained part for the fusion stage (Sec. III-C); returns the module.

    Two things: no parameter takes a gradient (requires_grad False, so an optimizer built from
    the parameters that require one never sees them), AND eval mode on every submodule, because a
    BatchNorm layer in train mode updates its running statistics in the forward pass, without any
    gradient or optimizer step.
    """
    raise NotImplementedError("freeze (Sec. III-C)")


def changed_tensors(before, after):
    """Names of the state_dict entries that are not bit-identical between two snapshots.

    before, after: {name: tensor} as from module.state_dict() (parameters AND buffers: BatchNorm
    running_mean, running_var, num_batches_tracked). Any change counts, even one unit in the last
    place, so the test is torch.equal, not a tolerance. Returns the names in `before`'s order.
    """
    raise NotImplementedError("changed_tensors (Sec. III-C)")
