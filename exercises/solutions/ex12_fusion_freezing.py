"""Exercise 12 (solution): the fusion stage's model, its autoencoders frozen (Sec. III-C, Fig. 4).

Check it: python exercises/check.py 12 --solution
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
        super().__init__()
        self.fusion = fusion
        fusion.autoencoders.requires_grad_(False)
        fusion.autoencoders.eval()

    def train(self, mode=True):
        """nn.Module.train sets the mode of every submodule, the frozen autoencoders too: back to eval."""
        super().train(mode)
        self.fusion.autoencoders.eval()
        return self

    def trainable_parameters(self):
        """The list the optimizer gets: the parameters of the fusion layers, in fusion.named_parameters() order."""
        return [p for name, p in self.fusion.named_parameters() if not name.startswith("autoencoders.")]

    def forward(self, batch):
        """batch {m: (x (B, T, C, H, W), days (B, T))} -> ({m: reconstruction}, fused (B, 7)), as FusionModel."""
        return self.fusion(batch)
