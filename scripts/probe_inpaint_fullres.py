"""Probe: how fast does a network learn to fill scattered missing pixels on this CPU?

    python scripts/probe_inpaint_fullres.py plain48x8r mse 3000 1e-3 16 48     # the README's 27.68 dB
    python scripts/probe_inpaint_fullres.py unet32x64x128r log 1200 1e-3 16 96  # the inpainter's U-Net alone

ARCH: plainWxD (a full-resolution residual CNN over the harmonic pre-fill and the mask), tailWxD (the same CNN
over the one-pass fill of inpaint-color's U-Net without its detail path, i.e. stage 2's, kept frozen) or unetAxBxC (the
inpaint-vae context U-Net and decoder, z = prior mean); a trailing r starts the last layer at N(0, 1e-3)
instead of zeros.  LOSS: mse or log (the per-crop log error).  Then steps, lr, batch, crop size, and MASKS:
pixels (rate 0.3-0.7, the default), mix (the inpainter's training mixture) or mix:P,S,B,T (its chances).  Trains on bsds400 train rows and prints the hole PSNR on 50% pixels of the first six
'val' rows (seeded masks) four times.  Nothing is saved; CBSD68/Kodak are not read.
"""
import sys, time, numpy as np, torch, csv, torch.nn as nn, torch.nn.functional as F
from pathlib import Path
from PIL import Image
from vaekit import create_model
from vaekit.models.inpainter import harmonic_fill
from vaekit.bench_denoise import to_u8
from vaekit.bench_inpaint import hole_psnr
from vaekit.degrade import make_mask
torch.set_num_threads(1); torch.set_flush_denormal(True)
arch, lossk, steps, lr, bs, P = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
masks = sys.argv[7] if len(sys.argv) > 7 else 'pixels'
root = Path('../shared/data/bsds400')
rows = [r for r in csv.reader(open(root/'SPLITS.tsv'), delimiter='\t')][1:]
train = [r[0] for r in rows if len(r) > 1 and r[1] != 'val']
val = [r[0] for r in rows if len(r) > 1 and r[1] == 'val'][:6]
imgs = [np.asarray(Image.open(root/f).convert('RGB'), np.float32)/255 for f in train]
vimgs = [np.asarray(Image.open(root/f).convert('RGB'), np.float32)/255 for f in val]
vm = [make_mask('pixels0.5', x.shape, seed=i) for i, x in enumerate(vimgs)]
rng = np.random.default_rng(0); torch.manual_seed(0)
class Plain(nn.Module):  # full-res residual CNN over the harmonic fill
    def __init__(s, w=48, n=8):
        super().__init__()
        L = [nn.Conv2d(4, w, 3, padding=1), nn.SiLU()]
        for _ in range(n - 2): L += [nn.Conv2d(w, w, 3, padding=1), nn.SiLU()]
        L += [nn.Conv2d(w, 3, 3, padding=1)]
        s.net = nn.Sequential(*L); nn.init.zeros_(s.net[-1].weight); nn.init.zeros_(s.net[-1].bias)
    def fill(s, y, m):
        base = harmonic_fill(y, m, 50)
        return base + m * s.net(torch.cat([base, m], 1))
class Unet(nn.Module):
    def __init__(s, widths):
        super().__init__()
        s.v = create_model('inpaint-vae', channels=3, widths=widths, latent_channels=8)
    def fill(s, y, m):
        base, skips, (pm, plv) = s.v.context(y, m)
        return s.v.decode(pm, skips, base, m)
class Tail(nn.Module):  # the plain CNN over stage 2's one-pass fill (kept frozen)
    def __init__(s, w=48, n=8):
        super().__init__()
        from vaekit.pretrained import load_pretrained
        v = load_pretrained('inpaint-color').float().eval()
        v.detail = None  # stage 3's U-Net is stage 2's, frozen: without the detail path this is stage 2's fill
        s.v = [v]  # a list: not a submodule, not trained
        s.net = Plain(w, n).net
    def fill(s, y, m):
        with torch.no_grad():
            v = s.v[0]; base, skips, (pm, plv) = v.context(y, m); x = v.decode(pm, skips, base, m)
        return x + m * s.net(torch.cat([x, m], 1))
rinit = arch.endswith('r'); arch = arch.rstrip('r')
if arch.startswith('tail'):
    model = Tail(*map(int, arch[len('tail'):].split('x')))
elif arch.startswith('plain'):
    model = Plain(*map(int, arch[len('plain'):].split('x')))
else:
    model = Unet([int(v) for v in arch[len('unet'):].split('x')])
if rinit:
    last = model.v.out if isinstance(model, Unet) else model.net[-1]
    torch.nn.init.normal_(last.weight, 0, 1e-3)
opt = torch.optim.Adam(model.parameters(), lr=lr)
def batch():
    out = []
    for _ in range(bs):
        a = imgs[rng.integers(len(imgs))]; y, x = rng.integers(a.shape[0]-P), rng.integers(a.shape[1]-P)
        c = a[y:y+P, x:x+P]
        if rng.random() < .5: c = c[:, ::-1]
        out.append(np.ascontiguousarray(c).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))
@torch.no_grad()
def evaluate():
    ps = []
    for x, m in zip(vimgs, vm):
        H, W = x.shape[:2]; h8, w8 = H - H % 8, W - W % 8
        xt = torch.from_numpy(x[:h8, :w8]).permute(2, 0, 1)[None]; mt = torch.from_numpy(m[:h8, :w8].astype(np.float32))[None, None]
        o = model.fill(xt * (1 - mt), mt)[0].permute(1, 2, 0).numpy()
        ps.append(hole_psnr(to_u8(o), to_u8(x[:h8, :w8]), m[:h8, :w8]))
    return float(np.mean(ps))
t0 = time.time()
print('params', sum(p.numel() for p in model.parameters()), 'step0', round(evaluate(), 3), flush=True)
for s in range(steps):
    x = batch()
    if masks.startswith('mix'):  # the inpainter's training mixture, or mix:P,S,B,T (pixels, strokes, boxes, text)
        from vaekit.models.inpainter import InpaintingVAE
        probs = tuple(float(v) for v in masks[4:].split(',')) if ':' in masks else InpaintingVAE.MASK_PROBS
        m = InpaintingVAE.random_masks(bs, P, P, probs=probs)
    else:
        m = (torch.rand(bs, 1, P, P) < torch.empty(bs, 1, 1, 1).uniform_(0.3, 0.7)).float()
    o = model.fill(x * (1 - m), m)
    mse = ((o - x) ** 2 * m).flatten(1).sum(1) / (3 * m.flatten(1).sum(1))
    loss = torch.log(mse + 1e-4).mean() if lossk == 'log' else mse.mean()
    opt.zero_grad(); loss.backward(); opt.step()
    for g in opt.param_groups: g['lr'] = lr * min(1, (s + 1) / 100) * 0.5 * (1 + np.cos(np.pi * (s + 1) / steps))
    if (s + 1) % (steps // 4) == 0:
        model.eval(); print(s + 1, 'val', round(evaluate(), 3), 'train', round(float(-10 * torch.log10(mse.detach()).mean()), 2), round(time.time() - t0), 's', flush=True); model.train()
