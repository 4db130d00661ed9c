"""deepfeat.py: the models of Peters et al. (arXiv 2511.11706), and nothing else.

Sections, in reading order:
  1. configs        one small dataclass per model, saved inside every checkpoint
  2. CBAM           channel + spatial attention (Woo et al. 2018), Sec. III-B / Fig. 3
  3. MultiScale     parallel convolutions of different kernel sizes (Sec. III-B)
  4. ConvAttentionBlock   conv (or multiscale) + BatchNorm + GELU + CBAM
  5. TemporalEncoding     sinusoidal encoding of real acquisition-day offsets
  6. ModalityAutoencoder  per-sensor context-aware autoencoder (Sec. III-B, Fig. 2)
  7. FusionModel          frozen autoencoders + trainable fusion layers (Sec. III-C, Fig. 4)
  8. GPPTransformer       downstream daily-GPP regressor (Sec. IV-C)

Input convention: a patch is x (B, T=11, C, H=15, W=15) in reflectance / normalised backscatter
units with NaN where the observation is missing (cloud, no acquisition), plus days (B, T): the
acquisition dates as day numbers (data.day_offsets). The model fills NaN with 0 and appends the
validity fraction as one extra input channel. That fill looks at one value only, so a frame's input
never depends on which window it sits in (the authors' code fills with the window's band mean,
which does; authors' repository Sonicious/DeepFeatures). The loss sees the mask separately.

Why the encoder is split into `encode_frames` and `encode_tokens`: the per-frame convolutions see
one 15 x 15 frame only, so embed.py computes each frame's token once and shares it between the 11
windows that contain the frame. The temporal transformer attends over the 11 frames of ONE sample
(batch_first), never across the batch: the authors' code mixes samples there (Sonicious/DeepFeatures).

Run `python deepfeat.py` for parameter counts and a shape walk-through of both autoencoders and
the fusion model (CPU, a second).
"""
import argparse
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# 1. Configs
# ----------------------------------------------------------------------------------------------

@dataclass
class AutoencoderConfig:
    """Sizes of one ModalityAutoencoder (Sec. III-B; sizes from the authors' repository Sonicious/DeepFeatures).

    `width` is the convolution width. The paper does not fix it; the authors' 147-channel model
    spends ~78 % of its FLOPs in one 147->147 7x7 conv, so we size it for 2 (S1) or 10 (S2) bands.
    `ff_mult` sets the transformer feed-forward width (ff_mult * d_model); the research code's width
    of 2 looks accidental, we use the conventional 2 x d_model.
    """
    modality: str                       # "s1", "s2", ... (checked when checkpoints are loaded)
    bands: tuple                        # band names in input channel order
    latent_dim: int                     # 2 for S1, 9 for S2 (Sec. III-B)
    n_frames: int = 11                  # T, frames per patch (Sec. III-B; data.N_FRAMES draws them)
    patch: int = 15                     # H = W, pixels per side (Sec. III-B; data.PATCH)
    width: int = 32                     # conv channels in the attention blocks
    kernel_sizes: tuple = (1, 3, 5)     # multiscale branches (first encoder / last decoder block)
    token_channels: int = 16            # channels of the final 4x4 map -> d_model = 16*4*4 = 256 (S2)
    n_heads: int = 8
    n_layers: int = 3
    ff_mult: int = 2
    dropout: float = 0.25
    token_bottleneck: int = 16          # linear 256 -> 16 per frame
    frame_bottleneck: int = 4           # linear over frames 11 -> 4
    centre_path: bool = False           # a linear path between each frame's token and its central pixel
    #                                     (ours, off in the paper's architecture; ModalityAutoencoder says why)

    def __post_init__(self):
        self.bands = tuple(self.bands)
        self.kernel_sizes = tuple(self.kernel_sizes)

    @property
    def sizes(self):
        """Spatial size after each encoder block: 15 -> 15 -> 8 -> 4 (3x3 convs, stride 1, 2, 2)."""
        s1 = self.patch
        s2 = (s1 - 1) // 2 + 1
        return (s1, s2, (s2 - 1) // 2 + 1)

    @property
    def d_model(self):
        return self.token_channels * self.sizes[-1] ** 2


@dataclass
class FusionConfig:
    """Sizes of the fusion layers (Sec. III-C). The paper gives only the 7-d bottleneck."""
    modalities: tuple = ("s1", "s2")    # order of tokens; the LAST one is the time reference (S2)
    fused_dim: int = 7
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 2
    dropout: float = 0.1

    def __post_init__(self):
        self.modalities = tuple(self.modalities)


@dataclass
class GPPConfig:
    """GPP regressor sizes (Sec. IV-C: linear input, 4 transformer blocks, regression head)."""
    n_features: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 4
    dropout: float = 0.1
    ff_mult: int = 4
    annual_phase: bool = True           # add the learned annual-phase encoding (ours; the paper has none)


# ----------------------------------------------------------------------------------------------
# 2. CBAM (Woo et al. 2018)
# ----------------------------------------------------------------------------------------------

class CBAM(nn.Module):
    """Convolutional Block Attention Module: x * channel_gate(x), then * spatial_gate(.).

    Channel gate: a shared MLP over the average- and max-pooled descriptors of the frame,
    sigmoid(MLP(avg) + MLP(max)) -> (N, C, 1, 1). Spatial gate: a 7x7 conv over the channel-mean and
    channel-max maps, sigmoid -> (N, 1, H, W). Both gates lie in (0, 1).
    """

    def __init__(self, channels, reduction=4, spatial_kernel=7):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def channel_gate(self, x):                                   # x (N, C, H, W)
        avg = x.mean(dim=(2, 3), keepdim=True)                   # (N, C, 1, 1)
        mx = x.amax(dim=(2, 3), keepdim=True)                    # (N, C, 1, 1)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))

    def spatial_gate(self, x):                                   # x (N, C, H, W)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(pooled))               # (N, 1, H, W)

    def forward(self, x):
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)


# ----------------------------------------------------------------------------------------------
# 3. Multiscale module (Sec. III-B, after Szegedy et al. 2015)
# ----------------------------------------------------------------------------------------------

class MultiScale(nn.Module):
    """Parallel 'same'-padded convolutions with kernel sizes k in `kernel_sizes`, each followed by
    GELU (without it the branches and the merge would collapse into one conv), concatenated and
    merged by a 1x1 conv: fine detail and broader context in one block (gray brackets, Fig. 3)."""

    def __init__(self, in_ch, out_ch, kernel_sizes):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_ch, out_ch, k, padding=k // 2) for k in kernel_sizes)
        self.merge = nn.Conv2d(out_ch * len(kernel_sizes), out_ch, 1)

    def forward(self, x):                                        # (N, in_ch, H, W)
        return self.merge(torch.cat([F.gelu(b(x)) for b in self.branches], dim=1))   # (N, out_ch, H, W)


# ----------------------------------------------------------------------------------------------
# 4. Convolutional attention block (Fig. 3)
# ----------------------------------------------------------------------------------------------

class ConvAttentionBlock(nn.Module):
    """[resize] -> conv 3x3 (or MultiScale) -> BatchNorm -> GELU -> CBAM.

    stride 2 downsamples (encoder); `out_size` first resizes by nearest-neighbour upsampling
    (decoder), so decoder sizes mirror the encoder's exactly (4 -> 8 -> 15).
    BatchNorm in eval mode is a per-channel affine map, so an embedding never depends on its batch;
    train.fit recalibrates its statistics before each validation (it trained clearly better than
    GroupNorm or no normalisation here; GroupNorm also removes a frame's brightness).
    """

    def __init__(self, in_ch, out_ch, stride=1, kernel_sizes=None, out_size=None):
        super().__init__()
        self.out_size = out_size
        if kernel_sizes:
            self.conv = MultiScale(in_ch, out_ch, kernel_sizes)
        else:
            self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)
        self.cbam = CBAM(out_ch)

    def forward(self, x):                                        # (N, in_ch, h, w)
        if self.out_size is not None:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="nearest")
        return self.cbam(F.gelu(self.norm(self.conv(x))))       # (N, out_ch, h', w')


# ----------------------------------------------------------------------------------------------
# 5. Temporal encoding of real acquisition dates (Sec. III-B)
# ----------------------------------------------------------------------------------------------

class TemporalEncoding(nn.Module):
    """Sinusoidal encoding of day offsets, scaled by 1/sqrt(d_model) (as the authors' code scales its learned table).

    PE(t)[2i] = sin(t / P^(2i/D)), PE(t)[2i+1] = cos(t / P^(2i/D)), t in days (may be fractional
    or negative). The caller passes offsets from the window's first date, so irregular gaps
    (5 days, then 35 days behind a cloudy spell) give different encodings while a shift of all
    dates changes nothing. The authors use a learned table over 0..350 days; sinusoids on the same
    offsets are our documented choice (they extend to multi-year gaps without a table).
    """

    def __init__(self, d_model, max_period=10000.0):
        super().__init__()
        freqs = max_period ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
        self.register_buffer("freqs", freqs, persistent=False)   # (D/2,)
        self.scale = 1.0 / math.sqrt(d_model)

    def forward(self, offsets):                                  # (..., T) days
        angles = offsets.to(self.freqs.dtype).unsqueeze(-1) * self.freqs   # (..., T, D/2)
        pe = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., T, D)
        return pe * self.scale


def _transformer(d_model, n_heads, n_layers, ff_mult, dropout):
    """A stack of standard encoder layers, batch_first: attention runs over each sample's own tokens."""
    layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_mult * d_model, dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)


# ----------------------------------------------------------------------------------------------
# 6. Modality autoencoder (Sec. III-B, Fig. 2-3)
# ----------------------------------------------------------------------------------------------

class ModalityAutoencoder(nn.Module):
    """Context-aware autoencoder for one sensor: (B, 11, C, 15, 15) -> latent (B, L) -> patch.

    Encoder: per frame, 3 conv attention blocks (the first multiscale) -> 4x4x16 map -> token of
    d_model = 256; temporal transformer over the 11 tokens with the acquisition-date encoding;
    bottleneck: linear 256 -> 16 per frame, linear over frames 11 -> 4, flatten 64, linear -> L
    (a single vector per sample: the embedding of the central pixel and date with its context).
    Decoder: the mirror image, reconstructing all 11 frames of the patch.

    `centre_path` (our departure, off by default): each frame's token also gets a linear map of that
    frame's central pixel (its bands and validity), and the decoded frame's central pixel gets a
    linear map of its token added. Why: the embedding is that of the central pixel-date and Eq. 1
    puts ~3/4 of the loss there, but the two stride-2 convolutions average the central pixel with
    8 to 80 neighbours and the decoder rebuilds it from a 4 x 4 map; at CPU budgets (thousands of
    steps, narrow convolutions) training then settles on interpolating the centre from its context,
    and in a world of independent pixels it never learns to pass one (docs/learning.md). With the
    path the centre gets through within a few hundred steps. It keeps what embed.py relies on: a
    frame's token depends on that frame's patch only, and each frame decodes from its own token.
    """

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        C, w, k = len(cfg.bands), cfg.width, cfg.kernel_sizes
        s_full, s_half, s_quarter = cfg.sizes
        D, Tb, Fb = cfg.d_model, cfg.token_bottleneck, cfg.frame_bottleneck
        # encoder: C bands + 1 validity channel per frame
        self.enc_blocks = nn.Sequential(
            ConvAttentionBlock(C + 1, w, kernel_sizes=k),                   # (N, w, 15, 15)
            ConvAttentionBlock(w, w, stride=2),                              # (N, w, 8, 8)
            ConvAttentionBlock(w, cfg.token_channels, stride=2),             # (N, 16, 4, 4)
        )
        self.time_encoding = TemporalEncoding(D)
        self.enc_transformer = _transformer(D, cfg.n_heads, cfg.n_layers, cfg.ff_mult, cfg.dropout)
        self.enc_token = nn.Linear(D, Tb)
        self.enc_frames = nn.Linear(cfg.n_frames, Fb)
        self.enc_latent = nn.Linear(Tb * Fb, cfg.latent_dim)
        # decoder (mirror)
        self.dec_latent = nn.Linear(cfg.latent_dim, Tb * Fb)
        self.dec_frames = nn.Linear(Fb, cfg.n_frames)
        self.dec_token = nn.Linear(Tb, D)
        self.dec_transformer = _transformer(D, cfg.n_heads, cfg.n_layers, cfg.ff_mult, cfg.dropout)
        self.dec_blocks = nn.Sequential(
            ConvAttentionBlock(cfg.token_channels, w, out_size=s_half),      # (N, w, 8, 8)
            ConvAttentionBlock(w, w, out_size=s_full),                       # (N, w, 15, 15)
            ConvAttentionBlock(w, w, kernel_sizes=k),                        # (N, w, 15, 15)
        )
        self.dec_out = nn.Conv2d(w, C, 1)                                    # (N, C, 15, 15)
        if cfg.centre_path:
            self.enc_centre = nn.Linear(C + 1, D)                            # central pixel -> token
            self.dec_centre = nn.Linear(D, C)                                # token -> central pixel

    def check_input(self, x, days):
        """One clear error for patches that do not match this model (never a deep torch traceback)."""
        cfg = self.cfg
        want = (cfg.n_frames, len(cfg.bands), cfg.patch, cfg.patch)
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{cfg.modality} autoencoder expects patches (B, T, C, H, W) = (B, {want}) "
                             f"for bands {cfg.bands}, got {tuple(x.shape)}")
        if tuple(days.shape) != tuple(x.shape[:2]):
            raise ValueError(f"days must have shape (B, T) = {tuple(x.shape[:2])}, got {tuple(days.shape)}")

    def encode_frames(self, frames):
        """Per-frame spatial encoding: frames (N, C, H, W) with NaN -> tokens (N, D).

        Depends on that one frame only (fill + validity channel are per value), which is what
        lets embed.py share a frame's token between all windows containing it.
        """
        valid = torch.isfinite(frames)
        filled = torch.where(valid, frames, torch.zeros_like(frames))
        x = torch.cat([filled, valid.float().mean(dim=1, keepdim=True)], dim=1)   # (N, C+1, H, W)
        tokens = self.enc_blocks(x).flatten(1)                                      # (N, D)
        if self.cfg.centre_path:
            c = self.cfg.patch // 2
            tokens = tokens + self.enc_centre(x[:, :, c, c])                        # (N, C+1) -> (N, D)
        return tokens

    def encode_tokens(self, tokens, days):
        """Temporal transformer + bottleneck: tokens (B, T, D), days (B, T) -> latent (B, L)."""
        B, T, D = tokens.shape
        offsets = days - days[:, :1]                                   # (B, T) days since first frame
        h = self.enc_transformer(tokens + self.time_encoding(offsets))   # (B, T, D)
        h = self.enc_token(h)                                          # (B, T, 16)
        h = self.enc_frames(h.transpose(1, 2))                         # (B, 16, 4)
        return self.enc_latent(h.flatten(1))                           # (B, L)

    def encode(self, x, days):
        """x (B, T, C, H, W) with NaN, days (B, T) -> latent (B, L)."""
        self.check_input(x, days)
        B, T, C, H, W = x.shape
        tokens = self.encode_frames(x.flatten(0, 1)).view(B, T, -1)    # (B, T, D)
        return self.encode_tokens(tokens, days)

    def decode_tokens(self, z, days):
        """latent (B, L), days (B, T) -> one decoded token per frame (B, T, D): the mirror of the
        bottleneck, then the decoder transformer over the T frames."""
        cfg = self.cfg
        B, T = days.shape
        h = self.dec_latent(z).view(B, cfg.token_bottleneck, cfg.frame_bottleneck)  # (B, 16, 4)
        h = self.dec_frames(h).transpose(1, 2)                         # (B, T, 16)
        h = self.dec_token(h)                                          # (B, T, D)
        return self.dec_transformer(h + self.time_encoding(days - days[:, :1]))     # (B, T, D)

    def decode_frames(self, tokens):
        """tokens (N, D) -> frames (N, C, H, W): each frame from its own token (embed.py decodes
        only the central frame for embedding_quality)."""
        s = self.cfg.sizes[-1]
        h = tokens.reshape(-1, self.cfg.token_channels, s, s)          # (N, 16, 4, 4)
        frames = self.dec_out(self.dec_blocks(h))                      # (N, C, H, W)
        if self.cfg.centre_path:
            P, c = self.cfg.patch, self.cfg.patch // 2
            pad = (c, P - 1 - c, c, P - 1 - c)
            centre = F.pad(self.dec_centre(tokens)[:, :, None, None], pad)   # (N, C, H, W), 0 off-centre
            frames = frames + centre
        return frames

    def decode(self, z, days):
        """latent (B, L), days (B, T) -> reconstruction (B, T, C, H, W)."""
        B, T = days.shape
        out = self.decode_frames(self.decode_tokens(z, days).flatten(0, 1))      # (B*T, C, H, W)
        return out.view(B, T, len(self.cfg.bands), self.cfg.patch, self.cfg.patch)

    def forward(self, x, days):
        z = self.encode(x, days)
        return self.decode(z, days), z


# ----------------------------------------------------------------------------------------------
# 7. Fusion model (Sec. III-C, Fig. 4)
# ----------------------------------------------------------------------------------------------

class FusionModel(nn.Module):
    """Frozen per-modality autoencoders + trainable fusion layers -> one 7-d embedding.

    latent z_m (B, L_m) -> linear to d -> + temporal encoding of the modality's central date
    relative to the reference modality's (asynchronous S1/S2 acquisitions) + a learned modality
    token -> transformer over the M modality tokens -> flatten -> linear -> fused (B, 7)
    -> per-modality linear back to L_m -> frozen decoder m.

    Generic: any dict of ModalityAutoencoders works (add a sensor = add an autoencoder and a name).
    Frozen means requires_grad False AND eval mode, kept by `train()`, so dropout and BatchNorm
    statistics of the pretrained parts never move. `unfreeze()` trains everything jointly instead
    (the ablation of the paper's staged training).
    """

    def __init__(self, autoencoders: dict, cfg: FusionConfig):
        super().__init__()
        if tuple(autoencoders) != cfg.modalities:
            raise ValueError(f"fusion config lists modalities {cfg.modalities}, got autoencoders {tuple(autoencoders)}")
        self.cfg = cfg
        self.autoencoders = nn.ModuleDict(autoencoders)
        self.autoencoders.requires_grad_(False)
        self.frozen = True
        d = cfg.d_model
        self.project_in = nn.ModuleDict({m: nn.Linear(ae.cfg.latent_dim, d) for m, ae in autoencoders.items()})
        self.modality_token = nn.Parameter(torch.zeros(len(autoencoders), d))
        self.time_encoding = TemporalEncoding(d)
        self.transformer = _transformer(d, cfg.n_heads, cfg.n_layers, cfg.ff_mult, cfg.dropout)
        self.to_fused = nn.Linear(len(autoencoders) * d, cfg.fused_dim)
        self.project_out = nn.ModuleDict({m: nn.Linear(cfg.fused_dim, ae.cfg.latent_dim)
                                          for m, ae in autoencoders.items()})
        self.train()

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            self.autoencoders.eval()
        return self

    def unfreeze(self):
        """Joint fine-tuning: the autoencoders get gradients and train mode like the fusion layers."""
        self.frozen = False
        self.autoencoders.requires_grad_(True)
        return self.train(self.training)

    def trainable_parameters(self):
        """What goes to the optimizer: the fusion layers only (Sec. III-C), everything once unfrozen."""
        return [p for n, p in self.named_parameters() if not (self.frozen and n.startswith("autoencoders."))]

    def fuse(self, latents: dict, centre_days: dict):
        """latents {m: (B, L_m)}, centre_days {m: (B,)} -> fused (B, fused_dim)."""
        ref = centre_days[self.cfg.modalities[-1]]
        tokens = torch.stack([self.project_in[m](latents[m]) + self.time_encoding(centre_days[m] - ref)
                              for m in self.cfg.modalities], dim=1)      # (B, M, d)
        h = self.transformer(tokens + self.modality_token)              # (B, M, d)
        return self.to_fused(h.flatten(1))                              # (B, fused_dim)

    def encode(self, batch: dict):
        """batch {m: (x (B, T, C, H, W), days (B, T))} -> (fused (B, 7), latents {m: (B, L_m)})."""
        missing = set(self.cfg.modalities) - set(batch)
        if missing:
            raise ValueError(f"fusion batch lacks modalities {sorted(missing)}")
        latents = {m: self.autoencoders[m].encode(*batch[m]) for m in self.cfg.modalities}
        centre = self.autoencoders[self.cfg.modalities[-1]].cfg.n_frames // 2
        fused = self.fuse(latents, {m: batch[m][1][:, centre] for m in self.cfg.modalities})
        return fused, latents

    def decode(self, fused, days: dict):
        """fused (B, 7) -> {m: reconstruction (B, T, C_m, H, W)} through the frozen decoders."""
        return {m: self.autoencoders[m].decode(self.project_out[m](fused), days[m]) for m in self.cfg.modalities}

    def forward(self, batch: dict):
        fused, _ = self.encode(batch)
        return self.decode(fused, {m: batch[m][1] for m in self.cfg.modalities}), fused


# ----------------------------------------------------------------------------------------------
# 8. GPP regressor (Sec. IV-C)
# ----------------------------------------------------------------------------------------------

class GPPTransformer(nn.Module):
    """Daily features over a window (B, L, F) + days (B, L) -> GPP of the window's LAST day (B,).

    Linear input layer -> temporal encodings -> 4 transformer encoder blocks -> linear head on the
    last day's token. Predicting the last day means a prediction never uses later observations.

    Two temporal encodings are added to every day's token: the sinusoidal encoding of its offset
    within the window (as in the autoencoders) and a learned projection of its annual phase
    (sin, cos of 2 pi t / 365.25, t = days since 1970; the fixed offset to the day of year is
    absorbed by the projection). The phase tells the model the season, which the climatology
    baseline knows too, so the comparison measures what the features add beyond the calendar.
    `annual_phase=False` drops it, as in the paper's model.
    """

    def __init__(self, cfg: GPPConfig):
        super().__init__()
        self.cfg = cfg
        self.input = nn.Linear(cfg.n_features, cfg.d_model)
        self.time_encoding = TemporalEncoding(cfg.d_model)
        self.season = nn.Linear(2, cfg.d_model) if cfg.annual_phase else None
        self.transformer = _transformer(cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.ff_mult, cfg.dropout)
        self.head = nn.Linear(cfg.d_model, 1)

    def forward(self, x, days):                                  # x (B, L, F), days (B, L)
        h = self.input(x) + self.time_encoding(days - days[:, :1])   # (B, L, D)
        if self.season is not None:
            phase = 2 * math.pi * days / 365.25                      # (B, L)
            h = h + self.season(torch.stack([phase.sin(), phase.cos()], dim=-1))   # (B, L, 2) -> (B, L, D)
        h = self.transformer(h)                                  # (B, L, D)
        return self.head(h[:, -1]).squeeze(-1)                   # (B,)


# ----------------------------------------------------------------------------------------------
# Shape walk-through
# ----------------------------------------------------------------------------------------------

def count_parameters(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print parameter counts and a shape walk-through of the models.")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the dummy input (default 2)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    s1 = ModalityAutoencoder(AutoencoderConfig("s1", ("vv", "vh"), latent_dim=2,
                                               token_channels=8)).eval()        # as modalities.S1 sizes it
    s2 = ModalityAutoencoder(AutoencoderConfig("s2", ("B02", "B03", "B04", "B05", "B06", "B07", "B08",
                                                      "B8A", "B11", "B12"), latent_dim=9)).eval()
    fusion = FusionModel({"s1": s1, "s2": s2}, FusionConfig()).eval()
    B = args.batch
    days = torch.cumsum(torch.full((B, 11), 5.0), dim=1)
    with torch.no_grad():
        for ae in (s1, s2):
            cfg = ae.cfg
            x = torch.rand(B, cfg.n_frames, len(cfg.bands), cfg.patch, cfg.patch)
            print(f"{cfg.modality}: {count_parameters(ae):,} parameters, d_model {cfg.d_model}")
            print(f"  input                  {tuple(x.shape)}  (B, T, C, H, W)")
            h = torch.cat([x.flatten(0, 1), torch.ones_like(x.flatten(0, 1)[:, :1])], 1)
            print(f"  + validity channel     {tuple(h.shape)}  (B*T, C+1, H, W)")
            for i, block in enumerate(ae.enc_blocks):
                h = block(h)
                print(f"  encoder block {i + 1}        {tuple(h.shape)}")
            tokens = h.flatten(1).view(B, cfg.n_frames, -1)
            print(f"  tokens                 {tuple(tokens.shape)}  (B, T, D)")
            z = ae.encode_tokens(tokens, days)
            print(f"  latent                 {tuple(z.shape)}  (B, L)")
            print(f"  reconstruction         {tuple(ae.decode(z, days).shape)}")
        batch = {"s1": (torch.rand(B, 11, 2, 15, 15), days), "s2": (torch.rand(B, 11, 10, 15, 15), days)}
        recon, fused = fusion(batch)
        print(f"fusion: {count_parameters(fusion, trainable_only=True):,} trainable of {count_parameters(fusion):,}")
        print(f"  fused embedding        {tuple(fused.shape)}  (B, 7)")
        print("  reconstructions        " + ", ".join(f"{m} {tuple(r.shape)}" for m, r in recon.items()))


if __name__ == "__main__":
    main()
