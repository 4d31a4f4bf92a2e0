"""Reference outputs of diffusers' DDPMScheduler and DDIMScheduler for tests/unit_action.c.

Diffusion Policy's settings: beta_schedule squaredcos_cap_v2, clip_sample True,
set_alpha_to_one True, steps_offset 0, variance_type fixed_small; N = 100 and 50 training
timesteps, epsilon and sample prediction. Writes N{N}.alphas_cumprod, N{N}.x, N{N}.model_out,
N{N}.{pred}.ddim.{t} (one DDIM step of 10 from t) and N{N}.{pred}.ddpm_mean.{t} (one DDPM step
from t without its noise: the sample diffusers returns minus std * the noise it drew).
Usage: diffusion_ref.py OUT.safetensors
"""
import sys

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import save_file

out = {}
g = torch.Generator().manual_seed(0)
for N in (100, 50):
    x = torch.randn(4, 16, generator=g) * 1.5   # (batch, values): diffusers wants a 2nd dim
    mo = torch.randn(4, 16, generator=g)
    out[f"N{N}.x"] = x
    out[f"N{N}.model_out"] = mo
    for pred in ("epsilon", "sample"):
        kw = dict(num_train_timesteps=N, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                  prediction_type=pred)
        ddpm = DDPMScheduler(variance_type="fixed_small", **kw)
        out[f"N{N}.alphas_cumprod"] = ddpm.alphas_cumprod.float()
        ddim = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **kw)
        ddim.set_timesteps(10)
        for t in ddim.timesteps.tolist():
            y = ddim.step(mo, t, x, eta=0.0).prev_sample
            out[f"N{N}.{pred}.ddim.{t}"] = y
        ddpm.set_timesteps(N)
        for t in (N - 1, N // 2, 3, 0):
            seed = 1000 + t
            y = ddpm.step(mo, t, x, generator=torch.Generator().manual_seed(seed)).prev_sample
            noise = torch.randn(mo.shape, generator=torch.Generator().manual_seed(seed))
            std = ddpm._get_variance(t) ** 0.5 if t > 0 else torch.tensor(0.0)
            out[f"N{N}.{pred}.ddpm_mean.{t}"] = y - std * noise
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1])
print(f"wrote {len(out)} tensors to {sys.argv[1]}")
