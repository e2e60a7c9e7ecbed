"""Ship runs/cvae-mnist as cvae-mnist, with how often its variants keep their label.

A referee classifier (the bench's SmallCNN, 1,500 steps on the first 50,000
MNIST training images with labels) reads 1,000 validation digits (the last
10,000 training images) and 5 latent variants of each at strengths 1 and 2,
from the class-conditional VAE (decoded with the true label) and from the
unconditional mnist-vae; the card gets the fraction classified as the source
label.

    python scripts/ship_cvae_mnist.py [--data-dir ../shared/data/mnist]
"""
import argparse
import json

import numpy as np
import torch

from vaekit import data as vd
from vaekit.bench_augment import accuracy, train_classifier
from vaekit.pretrained import load_from_files, load_pretrained, ship
from vaekit.tasks.augment import latent_variants

ap = argparse.ArgumentParser()
ap.add_argument("--data-dir", default="../shared/data/mnist")
ap.add_argument("--run", default="runs/cvae-mnist")
args = ap.parse_args()
torch.set_num_threads(1)
tx, ty = vd.mnist_tensors(args.data_dir, "train")
X, Y = tx.numpy().astype(np.float32), ty.numpy().astype(np.int64)
referee = train_classifier(X[:50000], Y[:50000], steps=1500, seed=0, classical=False)
vx, vy = X[50000:51000], Y[50000:51000]
kept = {"referee_accuracy_on_the_sources": round(accuracy(referee, vx, vy), 4)}
cvae = load_from_files(f"{args.run}/model.safetensors", f"{args.run}/model.json")
plain = load_pretrained("mnist-vae")
for strength in (1.0, 2.0):
    for name, m in (("cvae-mnist", cvae), ("mnist-vae", plain)):
        if name == "cvae-mnist":
            m.condition(torch.from_numpy(vy))
        v = latent_variants(m, torch.from_numpy(vx), 5, strength=strength, seed=1)
        flat = v.reshape(-1, 1, 28, 28).numpy().astype(np.float32)
        kept[f"{name} strength {strength}"] = round(accuracy(referee, flat, np.repeat(vy, 5)), 4)
print(json.dumps(kept, indent=1))
card = json.load(open(f"{args.run}/model.json"))
p = ship(args.run, "cvae-mnist",
         data={"licence": "MNIST: CC BY-SA 3.0 (Y. LeCun, C. Cortes)",
               "labels": "trained WITH the labels of the first 50,000 training images (the last 10,000 validate)"},
         training={"command": "vaekit train configs/cvae-mnist.yaml --data-dir ../shared/data/mnist -o runs/cvae-mnist threads=1 --quiet"},
         metrics={"label_kept (fraction of variants a referee CNN assigns to the source label; 1,000 val digits x 5)": kept},
         hardware_note="trained on 1 CPU thread (Intel Xeon, no GPU)",
         limits="28x28 gray digits only; --keep-label decodes with the class of the folder, so a variant keeps its "
                "label by construction of the decoder input, and the referee figure says how often it also looks it")
print(p)
