"""Exercise 6 (solution): freeze a pretrained autoencoder and prove it stayed frozen (Sec. III-C).

Check it: python exercises/check.py 6 --solution
"""
import torch


def freeze(module):
    """Freeze a pretrained part for the fusion stage (Sec. III-C); returns the module.

    Frozen means, as "the pretrained encoders and decoders remained frozen": no parameter of the
    module requires a gradient, and the module computes as at inference (dropout off), so that
    neither its forward passes nor an optimizer built from the parameters that require a gradient
    change any of its state_dict tensors (parameters and buffers).
    """
    module.requires_grad_(False)
    return module.eval()


def changed_tensors(before, after):
    """Names of the state_dict entries that are not bit-identical between two snapshots.

    before, after: {name: tensor} as from module.state_dict() of one module at two times: the same
    names, possibly in another order, tensors of any dtype. Any change counts, however small. Returns
    a list of names in the order of `before`.
    """
    return [name for name, tensor in before.items() if not torch.equal(tensor, after[name])]
