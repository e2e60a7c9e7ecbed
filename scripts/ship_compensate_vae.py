"""Ship runs/compensate-vae as compensate-vae with VAE statistics on the bsds400 val rows."""
import json, torch
from pathlib import Path
import vaekit
from vaekit import data as vd
from vaekit.pretrained import ship, load_from_files
torch.set_num_threads(1)
run = Path("runs/compensate-vae")
m = load_from_files(run / "model.safetensors", run / "model.json")
files = vd.find_images("../shared/data/bsds400")
_, val = vd.split_by_file(files, "../shared/data/bsds400/SPLITS.tsv")
ds = vd.RandomPatches(val, size=32, patches_per_image=16, mode="RGB", seed=123, flip=False)
x = torch.stack([ds[i] for i in range(len(ds))])
st = vaekit.evaluate(m, x, k=100)
keep = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in st.items() if not isinstance(v, (list, dict))}
print(keep)
card = json.load(open(run / "model.json"))
tr = card["training"]
p = ship(run, "compensate-vae",
         data={"licence": "BSDS500 images (Berkeley): non-commercial research use; the images are not redistributed",
               "train": "bsds400 rows of SPLITS.tsv not marked 'val': random 32x32 crops with flips, taken as well exposed",
               "validation": "the 32 'val' rows (16 crops each)", "patch_size": 32},
         training={"command": "vaekit train configs/compensate-vae.yaml --data-dir ../shared/data/bsds400 -o runs/compensate-vae threads=1 --quiet"},
         metrics={"val_crops (bsds400 val rows, 512 crops of 32x32)": keep},
         limits=("Fixes a global exposure gain, gamma and per-channel colour cast (vaekit compensate --method vae): it picks the "
                 "correction under which the image is most likely for this VAE of well-exposed photo crops (change of variables "
                 "included), on a 256-px copy, then applies it at full resolution. It cannot recover clipped highlights or "
                 "shadows, fix local (spatially varying) lighting, noise or blur, and it will 'correct' images whose unusual "
                 "exposure or colour is intended (night scenes, sunsets, studio colour). A small model (0.26 M parameters) "
                 "trained briefly on one CPU thread: its likelihood is coarse (see bits_per_dim)."))
print(p)
