"""Exercise 6: freeze a pretrained autoencoder and prove it stayed frozen (Sec. III-C). See exercises/README.md.

Write freeze and changed_tensors, checked with one fusion-style optimizer step. Work in your own copy:
    python exercises/check.py --start 6    # once: copies this stub to exercises/mywork/ex06_freezing.py
    python exercises/check.py 6            # checks exercises/mywork/ex06_freezing.py
A solution is in exercises/solutions/ex06_freezing.py: try first. Hints come after a failed check.
"""
import torch


def freeze(module):
    """Freeze a pretrained part for the fusion stage (Sec. III-C); returns the module.

    Frozen means, as "the pretrained encoders and decoders remained frozen": no parameter of the
    module requires a gradient, and the module computes as at inference (dropout off), so that
    neither its forward passes nor an optimizer built from the parameters that require a gradient
    change any of its state_dict tensors (parameters and buffers).
    """
    raise NotImplementedError("freeze (Sec. III-C)")


def changed_tensors(before, after):
    """Names of the state_dict entries that are not bit-identical between two snapshots.

    before, after: {name: tensor} as from module.state_dict() of one module at two times: the same
    names, possibly in another order, tensors of any dtype. Any change counts, however small. Returns
    a list of names in the order of `before`.
    """
    raise NotImplementedError("changed_tensors (Sec. III-C)")
