"""Exercise 6 (solution): freeze a pretrained autoencoder and prove it stayed frozen (Sec. III-C).

Check it: python exercises/check.py 6 --solution
"""
import torch


def freeze(module):
    """Freeze a pretrained part for the fusion stage (Sec. III-C); returns the module.

    Two things: no parameter takes a gradient (requires_grad False, so an optimizer built from
    the parameters that require one never sees them), AND eval mode on every submodule, because a
    BatchNorm layer in train mode updates its running statistics in the forward pass, without any
    gradient or optimizer step.
    """
    module.requires_grad_(False)
    return module.eval()


def changed_tensors(before, after):
    """Names of the state_dict entries that are not bit-identical between two snapshots.

    before, after: {name: tensor} as from module.state_dict() (parameters AND buffers: BatchNorm
    running_mean, running_var, num_batches_tracked). Any change counts, even one unit in the last
    place, so the test is torch.equal, not a tolerance. Returns the names in `before`'s order.
    """
    return [name for name, tensor in before.items() if not torch.equal(tensor, after[name])]
