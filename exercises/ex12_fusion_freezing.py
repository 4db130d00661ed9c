"""Exercise 12: the fusion stage's model, its autoencoders frozen (Sec. III-C, Fig. 4). See exercises/README.md.

Write FusionStage, checked on a small deepfeat.FusionModel through the calls train.fit makes.
Work in your own copy:
    python exercises/check.py --start 12    # once: copies this stub to exercises/mywork/ex12_fusion_freezing.py
    python exercises/check.py 12            # checks exercises/mywork/ex12_fusion_freezing.py
A solution is in exercises/solutions/ex12_fusion_freezing.py: try first. Hints come after a failed check.
"""
import torch.nn as nn


class FusionStage(nn.Module):
    """The model of the fusion stage (Sec. III-C): "the pretrained encoders and decoders remained frozen"
    while the fusion layers train.

    `fusion` is a deepfeat.FusionModel handed over with nothing frozen (every parameter requires a
    gradient) and without any freezing of its own (its train() is nn.Module.train). Its pretrained
    parts are fusion.autoencoders (an nn.ModuleDict of ModalityAutoencoders); everything else of
    `fusion` (project_in, modality_token, transformer, to_fused, project_out) is the fusion layers.
    train.fit(stage, stage.trainable_parameters(), ...) builds its optimizer from the list, calls
    stage.train() at the start of every epoch and stage.eval() to validate. Throughout, the
    autoencoders must stay frozen as in exercise 6 (no gradient, computing as at inference: none of
    their state_dict tensors may change), while the fusion layers train in train mode.
    """

    def __init__(self, fusion):
        """Keep `fusion` (as self.fusion) and freeze its autoencoders; the fusion layers stay trainable."""
        raise NotImplementedError("FusionStage.__init__ (Sec. III-C)")

    def trainable_parameters(self):
        """The list the optimizer gets: the parameters of the fusion layers, in fusion.named_parameters() order."""
        raise NotImplementedError("FusionStage.trainable_parameters (Sec. III-C)")

    def forward(self, batch):
        """batch {m: (x (B, T, C, H, W), days (B, T))} -> ({m: reconstruction}, fused (B, 7)), as FusionModel."""
        return self.fusion(batch)
