"""One DDP training step on sample_data, run by tests/test_ddp.py under
`python -m torch.distributed.run --standalone --nproc_per_node N tests/ddp_step.py OUT.pt`.

Each rank takes its share of one global batch (recipe.patch_batches), the loss gradient is averaged
by DistributedDataParallel, and rank 0 saves the averaged gradient of every parameter to OUT.pt.
With N = 1 (no torchrun) the same script gives the single-process gradient of the whole batch.
"""
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data  # noqa: E402 (after sys.path)
import losses  # noqa: E402
import modalities  # noqa: E402
import recipe  # noqa: E402
import train  # noqa: E402
from deepfeat import AutoencoderConfig, ModalityAutoencoder  # noqa: E402


def main(out, batch_size=16):
    train.init_distributed("cpu")
    rank, world = train.rank_and_world()
    torch.manual_seed(0)
    quick = recipe.PRESETS["quick"]["autoencoder"]["model"]
    model = ModalityAutoencoder(dataclasses.replace(AutoencoderConfig("s2", data.S2_BANDS, 9), **quick))
    cubes, _ = modalities.load_splits([ROOT / "sample_data"], "s2", seed=0)
    batch = next(iter(recipe.patch_batches(cubes["train"], modalities.S2.sampling, "s2", batch_size, seed=0)(0)))
    trained = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    loss_fn = recipe.autoencoder_loss_fn(losses.s2_loss, losses.context_weights())
    loss, _ = loss_fn(trained, batch)
    loss.backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in model.named_parameters()}, out)
    train.end_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
