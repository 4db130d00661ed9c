"""Tests of deepfeat.py: shapes, attention ranges, date encoding, batch independence, freezing.

Run: python -m pytest -q tests/test_deepfeat.py   (tiny configs, a few seconds on CPU)
"""
import math

import pytest
import torch

import deepfeat
from deepfeat import (CBAM, AutoencoderConfig, ConvAttentionBlock, FusionConfig, FusionModel, GPPConfig,
                      GPPTransformer, ModalityAutoencoder, MultiScale, TemporalEncoding)


def tiny(modality, n_bands, latent):
    """A small but complete autoencoder: every block of the real one, narrower."""
    cfg = AutoencoderConfig(modality, tuple(f"b{i}" for i in range(n_bands)), latent,
                            width=8, token_channels=4, n_heads=4, n_layers=1)
    return ModalityAutoencoder(cfg)


def patches(B, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 11, C, 15, 15, generator=g)
    days = torch.cumsum(torch.randint(5, 30, (B, 11), generator=g).float(), dim=1) + 18000.0
    return x, days


def test_blocks_shapes_and_attention_range():
    x = torch.randn(2, 6, 15, 15)
    cbam = CBAM(6)
    assert cbam(x).shape == x.shape
    for gate in (cbam.channel_gate(x), cbam.spatial_gate(x)):
        assert ((gate > 0) & (gate < 1)).all()
    assert cbam.channel_gate(x).shape == (2, 6, 1, 1) and cbam.spatial_gate(x).shape == (2, 1, 15, 15)
    assert MultiScale(6, 8, (1, 3, 5))(x).shape == (2, 8, 15, 15)
    assert ConvAttentionBlock(6, 8, stride=2)(x).shape == (2, 8, 8, 8)
    assert ConvAttentionBlock(6, 8, out_size=15)(torch.randn(2, 6, 8, 8)).shape == (2, 8, 15, 15)


def test_config_derives_paper_sizes():
    cfg = AutoencoderConfig("s2", tuple("abcdefghij"), 9)
    assert cfg.sizes == (15, 8, 4)
    assert cfg.d_model == 256                      # 16 channels x 4 x 4, as the authors


@pytest.mark.parametrize("C,latent", [(2, 2), (10, 9)])
def test_autoencoder_shapes(C, latent):
    ae = tiny("m", C, latent).eval()
    x, days = patches(2, C)
    recon, z = ae(x, days)
    assert z.shape == (2, latent)
    assert recon.shape == x.shape
    h = torch.cat([x.flatten(0, 1), torch.ones(22, 1, 15, 15)], 1)          # (B*T, C+1, H, W)
    shapes = []
    for block in ae.enc_blocks:
        h = block(h)
        shapes.append(tuple(h.shape))
    assert shapes == [(22, 8, 15, 15), (22, 8, 8, 8), (22, 4, 4, 4)]
    assert ae.encode_frames(x.flatten(0, 1)).shape == (22, ae.cfg.d_model)
    for block in ae.dec_blocks:
        h = block(h)
        shapes.append(tuple(h.shape))
    assert shapes[3:] == [(22, 8, 8, 8), (22, 8, 15, 15), (22, 8, 15, 15)]


def test_wrong_input_gives_clear_error():
    ae = tiny("s2", 10, 9)
    x, days = patches(2, 10)
    with pytest.raises(ValueError, match="expects patches"):
        ae.encode(x[:, :, :4], days)
    with pytest.raises(ValueError, match="days must have shape"):
        ae.encode(x, days[:, :5])


def test_temporal_encoding_sees_gaps_not_shifts():
    te = TemporalEncoding(16)
    regular = torch.tensor([0.0, 5, 10, 15])
    gappy = torch.tensor([0.0, 5, 40, 45])
    assert not torch.allclose(te(regular), te(gappy))
    assert torch.allclose(te(regular)[:2], te(gappy)[:2])           # same offsets -> same encoding
    # hand value: first pair is (sin t, cos t) / sqrt(D) at frequency 1
    assert te(torch.tensor([2.0]))[0, 0].item() == pytest.approx(math.sin(2.0) / 4)
    ae = tiny("s2", 10, 9).eval()
    x, days = patches(1, 10)
    with torch.no_grad():
        z = ae.encode(x, days)
        assert torch.allclose(z, ae.encode(x, days + 365.0), atol=1e-5)   # shift of all dates
        stretched = days.clone()
        stretched[:, 6:] += 60                                            # a cloudy spell
        assert not torch.allclose(z, ae.encode(x, stretched), atol=1e-4)


def test_embedding_independent_of_batch():
    """The authors' encoder mixed samples across the batch (Sonicious/DeepFeatures); ours must not."""
    ae = tiny("s2", 10, 9).eval()
    x, days = patches(8, 10)
    x[3, 2, :, 4:9, 4:9] = float("nan")                                   # a cloud in one sample
    with torch.no_grad():
        alone = ae.encode(x[:1], days[:1])
        batched = ae.encode(x, days)
    assert torch.allclose(alone, batched[:1], atol=1e-6)


def test_nan_input_is_masked_not_propagated():
    ae = tiny("s2", 10, 9).eval()
    x, days = patches(2, 10)
    x[0, :, :, :3] = float("nan")
    with torch.no_grad():
        recon, z = ae(x, days)
    assert torch.isfinite(z).all() and torch.isfinite(recon).all()


def fusion_of(**aes):
    return FusionModel(aes, FusionConfig(modalities=tuple(aes), d_model=16, n_heads=2, n_layers=1))


def test_fusion_freezes_pretrained_parts():
    torch.manual_seed(0)
    model = fusion_of(s1=tiny("s1", 2, 2), s2=tiny("s2", 10, 9))
    frozen = {k: v.clone() for k, v in model.autoencoders.state_dict().items()}
    trainable = model.trainable_parameters()
    before = [p.detach().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    assert not any(m.training for m in model.autoencoders.modules())       # frozen parts stay in eval
    (x1, d), (x2, _) = patches(4, 2), patches(4, 10)
    recon, fused = model({"s1": (x1, d), "s2": (x2, d)})
    assert fused.shape == (4, 7)
    loss = (recon["s1"] - x1).abs().mean() + (recon["s2"] - x2).abs().mean()
    loss.backward()
    opt.step()
    for name, p in model.autoencoders.named_parameters():
        assert p.grad is None and not p.requires_grad, name
    for k, v in model.autoencoders.state_dict().items():
        assert torch.equal(v, frozen[k]), k                                 # incl. BatchNorm statistics
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, trainable))
    assert all(p.grad is not None for p in trainable)                       # gradient reaches every fusion layer


def test_fusion_takes_a_third_modality():
    """Adding a sensor = a new ModalityAutoencoder and a name (e.g. a DEM with one band)."""
    model = fusion_of(s1=tiny("s1", 2, 2), dem=tiny("dem", 1, 3), s2=tiny("s2", 10, 9)).eval()
    x1, d = patches(2, 2)
    batch = {"s1": (x1, d), "dem": (patches(2, 1)[0], d), "s2": (patches(2, 10)[0], d)}
    recon, fused = model(batch)
    assert fused.shape == (2, 7) and recon["dem"].shape == (2, 11, 1, 15, 15)
    with pytest.raises(ValueError, match="lacks modalities"):
        model({"s1": batch["s1"], "s2": batch["s2"]})


def test_fusion_uses_asynchronous_dates():
    """Guards against the fusion ignoring when S1 was acquired: S1 centre days replaced by the S2 ones
    (the reference), a date encoding that ignores the days, or a centre frame other than T // 2 = 5.

    S1 acquired 4 days before each S2 date: the S1 autoencoder sees the same offsets within its own
    window (d - 4 - (d_0 - 4) = d - d_0), so its latent is unchanged and the whole difference must come
    from the fusion's encoding of the centre-date gap (S1 centre - S2 centre = -4 days). Shifting both
    modalities by 100 days changes nothing (only the gap counts). Moving only the S1 centre frame
    (index 5) by -2 days must give fuse(latents, gap d1[:, 5] - d2[:, 5] = -2).
    """
    torch.manual_seed(0)
    model = fusion_of(s1=tiny("s1", 2, 2), s2=tiny("s2", 10, 9)).eval()
    (x1, d), (x2, _) = patches(2, 2), patches(2, 10)
    with torch.no_grad():
        same, lat_same = model.encode({"s1": (x1, d), "s2": (x2, d)})
        lagged, lat_lag = model.encode({"s1": (x1, d - 4.0), "s2": (x2, d)})   # S1 acquired 4 days earlier
        shifted, _ = model.encode({"s1": (x1, d + 96.0), "s2": (x2, d + 100.0)})
        torch.testing.assert_close(lat_lag["s1"], lat_same["s1"], rtol=0, atol=1e-6)
        assert (lagged - same).abs().max() > 1e-3                            # the gap is seen
        torch.testing.assert_close(shifted, lagged, rtol=0, atol=1e-5)       # ... and only the gap
        centre = {"s1": d[:, 5] - 4.0, "s2": d[:, 5]}
        torch.testing.assert_close(lagged, model.fuse(lat_lag, centre), rtol=0, atol=1e-6)
        d1 = d.clone()
        d1[:, 5] -= 2.0                                                      # only the S1 centre frame moves
        fused, lat = model.encode({"s1": (x1, d1), "s2": (x2, d)})
        torch.testing.assert_close(fused, model.fuse(lat, {"s1": d1[:, 5], "s2": d[:, 5]}), rtol=0, atol=1e-6)
        same_centres = model.fuse(lat, {"s1": d[:, 5], "s2": d[:, 5]})      # what a reader of frame 4 or 6 sees
        assert (fused - same_centres).abs().max() > 1e-3


def test_gpp_transformer_shape_and_last_day():
    model = GPPTransformer(GPPConfig(n_features=7, d_model=16, n_heads=2)).eval()
    x = torch.randn(3, 90, 7)
    days = torch.arange(90.0).expand(3, 90)
    assert model(x, days).shape == (3,)


def test_gpp_head_reads_the_last_days_token():
    """Guards against a head that reads token 0, the mean of the tokens or any other pooling instead
    of the last day's token (Sec. IV-C: the prediction is for the window's last day).

    1. With the real transformer: the head's input is exactly the transformer output at position -1
       (forward hooks), and the prediction is head(hidden[:, -1]).
    2. With the transformer replaced by the identity, token i = input(x_i) + TE(days_i - days_0) +
       season(phase_i), so the prediction is that formula at i = L - 1, computed here by hand; changing
       the features of days 0 .. L-2 leaves it bit-identical, changing the last day's features does not.
    """
    torch.manual_seed(0)
    model = GPPTransformer(GPPConfig(n_features=3, d_model=8, n_heads=2, n_layers=1)).eval()
    assert model.season is not None
    x = torch.randn(2, 6, 3)
    days = torch.tensor([[0.0, 5, 10, 15, 20, 30], [100, 101, 102, 140, 141, 200]]) + 18000
    seen = {}
    model.transformer.register_forward_hook(lambda m, inp, out: seen.update(hidden=out))
    model.head.register_forward_hook(lambda m, inp, out: seen.update(head_in=inp[0]))
    with torch.no_grad():
        pred = model(x, days)
        assert torch.equal(seen["head_in"], seen["hidden"][:, -1])
        torch.testing.assert_close(pred, model.head(seen["hidden"][:, -1]).squeeze(-1), rtol=0, atol=0)
        assert not torch.allclose(seen["hidden"][:, -1], seen["hidden"][:, 0])   # the choice matters here
        assert not torch.allclose(seen["hidden"][:, -1], seen["hidden"].mean(1))

    model.transformer = torch.nn.Identity()
    with torch.no_grad():
        phase = 2 * math.pi * days[:, -1] / 365.25
        last = (model.input(x[:, -1]) + model.time_encoding(days[:, -1] - days[:, 0])
                + model.season(torch.stack([phase.sin(), phase.cos()], -1)))     # annual phase (default on)
        torch.testing.assert_close(model(x, days), model.head(last).squeeze(-1), rtol=0, atol=1e-6)
        earlier = x.clone()
        earlier[:, :-1] = torch.randn(2, 5, 3) * 10
        assert torch.equal(model(earlier, days), model(x, days))
        changed = x.clone()
        changed[:, -1] += 1.0
        assert (model(changed, days) - model(x, days)).abs().min() > 1e-4


def test_walk_through_prints_the_trained_sizes(capsys):
    """`python deepfeat.py` shows the models train_s1/s2.py train: S1 with its 128-wide token
    (modalities.S1's token_channels, 8 x 4 x 4), S2 with 256 (16 x 4 x 4)."""
    deepfeat.main([])
    out = capsys.readouterr().out
    assert "s1: " in out and "d_model 128" in out.split("s2: ")[0]
    assert "d_model 256" in out.split("s2: ")[1]


def test_centre_path_adds_the_central_pixel_and_nothing_else():
    """The centre path (AutoencoderConfig.centre_path): the encoder adds enc_centre(central pixel) to a
    frame's token, the decoder adds dec_centre(token) to the central pixel of its frame only.

    Known values: two frames that differ by d = 0.3 in band 0 at the central pixel alone. Their tokens
    differ by what the convolutions make of it plus enc_centre's column 0 times 0.3. Decoding: with
    dec_centre's weights at 0 and its bias at b = (1, 2), the frame equals the decoder without the path
    everywhere but the central pixel, which is b higher. Without the path the model has no such layers."""
    torch.manual_seed(0)
    cfg = AutoencoderConfig("s2", ("b0", "b1"), 2, width=8, token_channels=4, n_heads=4, n_layers=1, centre_path=True)
    ae = ModalityAutoencoder(cfg).eval()
    frames = torch.rand(2, 2, 15, 15)
    frames[1] = frames[0]
    frames[1, 0, 7, 7] += 0.3
    with torch.no_grad():
        tokens = ae.encode_frames(frames)                                     # (2, D)
        ones = torch.ones(2, 1, 15, 15)
        convs = ae.enc_blocks(torch.cat([frames, ones], 1)).flatten(1)        # the convolutions alone
        torch.testing.assert_close(tokens[1] - tokens[0], convs[1] - convs[0] + 0.3 * ae.enc_centre.weight[:, 0])
        ae.dec_centre.weight.zero_()
        ae.dec_centre.bias.copy_(torch.tensor([1.0, 2.0]))
        out = ae.decode_frames(tokens)                                        # (2, C, 15, 15)
        plain = ae.dec_out(ae.dec_blocks(tokens.reshape(2, 4, 4, 4)))
        diff = out - plain
        torch.testing.assert_close(diff[:, :, 7, 7], torch.tensor([[1.0, 2.0]] * 2))
        diff[:, :, 7, 7] = 0
        assert diff.abs().max() == 0
    assert not hasattr(tiny("s2", 2, 2), "enc_centre") and not hasattr(tiny("s2", 2, 2), "dec_centre")
