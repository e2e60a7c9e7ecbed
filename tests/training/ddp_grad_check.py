"""Run under torchrun (2 processes, gloo): checks that DDP as vaekit sets it up
averages gradients across processes.  Writes a JSON verdict from rank 0."""

import json
import sys

import torch
import torch.distributed as dist

from vaekit import create_model
from vaekit.training import dist as D


def main(out_path):
    info = D.setup("cpu")
    assert info.enabled and info.world_size == 2
    args = dict(image_shape=(1, 8, 8), hidden=[16], latent_dim=3)
    torch.manual_seed(0)
    local = create_model("mlp-vae", **args)
    torch.manual_seed(0)
    wrapped = torch.nn.parallel.DistributedDataParallel(create_model("mlp-vae", **args))
    # each rank gets different data
    x = torch.bernoulli(torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(10 + info.rank)))

    torch.manual_seed(100 + info.rank)
    local.loss(x, local(x))["loss"].backward()
    g_local = torch.cat([p.grad.flatten() for p in local.parameters()])

    torch.manual_seed(100 + info.rank)  # same latent noise as the local pass
    m = wrapped.module
    m.loss(x, wrapped(x))["loss"].backward()
    g_ddp = torch.cat([p.grad.flatten() for p in m.parameters()])

    gathered = [torch.zeros_like(g_local) for _ in range(2)]
    dist.all_gather(gathered, g_local)
    mean = (gathered[0] + gathered[1]) / 2
    ok_mean = torch.allclose(g_ddp, mean, atol=1e-6, rtol=1e-5)
    differs = not torch.allclose(gathered[0], gathered[1])
    if info.is_main:
        with open(out_path, "w") as f:
            json.dump(
                {
                    "averaged": bool(ok_mean),
                    "ranks_differ": bool(differs),
                    "max_err": float((g_ddp - mean).abs().max()),
                },
                f,
            )
    del wrapped, m  # the DDP reducer must go before its process group (see dist.teardown)
    D.teardown(info)


if __name__ == "__main__":
    main(sys.argv[1])
