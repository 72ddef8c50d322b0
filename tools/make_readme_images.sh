#!/usr/bin/env bash
# Re-makes the README's feature images (assets/readme/) with the engine and the built-in
# model: every picture in the README's feature sections comes from one of these commands.
#   bash tools/make_readme_images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
G=target/release/sd-wgpu
# Re-making replaces the images already there.
gen() { "$G" generate --overwrite "$@"; }
O=assets/readme
mkdir -p "$O"
# Text-to-image: the newcomer's first command.
gen --prompt "a red sneaker" --seed 1 --out $O/txt2img.png
# Image-to-image: the sneaker redrawn blue, strength 0.6.
gen --prompt "a blue sneaker" --init-image $O/txt2img.png --strength 0.6 --seed 2 --out $O/img2img.png
# Inpainting: the right half of a green pullover repainted from a prompt.
gen --prompt "a green pullover" --seed 3 --out $O/inpaint-input.png
python3 - <<'PY'
import struct, zlib
w = h = 32
rows = b"".join(b"\x00" + bytes(255 if x >= 16 else 0 for x in range(w)) for _ in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open("assets/readme/inpaint-mask.png", "wb").write(png)
PY
gen --prompt "a purple pullover" --init-image $O/inpaint-input.png --mask $O/inpaint-mask.png --keep-unmasked --seed 4 --out $O/inpaint.png
# Prompt weighting: the same seed, plain and with the colour word weighted down.
gen --prompt "a yellow dress" --seed 5 --out $O/weight-plain.png
gen --prompt "a [[[yellow]]] dress" --seed 5 --out $O/weight-down.png
# A batch of 4 in one U-Net call, and previews every 10 steps.
gen --prompt "a white ankle boot" --seed 6 --batch-size 4 --out $O/batch.png
gen --prompt "a blue bag" --seed 7 --preview-every 10 --preview $O/preview.png --out $O/preview-final.png
# LoRA: the colour-swap LoRA trained for the built-in model (tools/train_fashion_lora.py), the
# text-to-image sneaker's prompt and seed at 0.5 and 1.0.
L=assets/lora/fashion-colour-swap.safetensors
gen --prompt "a red sneaker" --seed 1 --lora $L:0.5 --out $O/lora-half.png
gen --prompt "a red sneaker" --seed 1 --lora $L:1.0 --out $O/lora-full.png
# Samplers added by issue 14 (DPM++ SDE with its Brownian-tree noise, UniPC, DEIS) and Euler
# with the beta σ schedule: the sneaker's prompt and seed, 20 steps.
gen --prompt "a red sneaker" --seed 1 --steps 20 --sampler "dpm++sde" --out $O/sampler-dpmsde.png
gen --prompt "a red sneaker" --seed 1 --steps 20 --sampler unipc --out $O/sampler-unipc.png
gen --prompt "a red sneaker" --seed 1 --steps 20 --sampler deis --out $O/sampler-deis.png
gen --prompt "a red sneaker" --seed 1 --steps 20 --sampler euler --schedule beta --out $O/sampler-euler-beta.png
# Tiled VAE: 64×64 decoded exactly and in 32 px tiles (the built-in VAE's sample_size).
gen --prompt "a red sneaker" --seed 1 --width 64 --height 64 --out $O/tiling-exact.png
gen --prompt "a red sneaker" --seed 1 --width 64 --height 64 --vae-tiling --out $O/tiling-tiled.png
# The tiny autoencoder trained for the built-in model (tools/train_fashion_taesd.py): the
# sneaker decoded by it, and TAESD previews of a VAE-decoded run.
T=assets/fashion-taesd
gen --prompt "a red sneaker" --seed 1 --taesd $T --out $O/taesd.png
gen --prompt "a blue bag" --seed 7 --taesd $T --decoder vae --preview-every 10 --preview-decoder taesd \
    --preview $O/taesd-preview.png --out $O/taesd-preview-final.png
# The 4× upscaler trained for the built-in model (tools/train_fashion_upscaler.py): the
# text-to-image sneaker and the preview example's bag box-reduced to 8×8, then upscaled to 32×32.
U=assets/fashion-upscaler
python3 tools/box_downscale.py $O/txt2img.png $O/upscale-sneaker-8px.png 4
"$G" upscale --overwrite --model $U --image $O/upscale-sneaker-8px.png --prompt "a red sneaker" \
    --steps 20 --guidance 4 --seed 1 --out $O/upscale-sneaker.png
python3 tools/box_downscale.py $O/preview-final.png $O/upscale-bag-8px.png 4
"$G" upscale --overwrite --model $U --image $O/upscale-bag-8px.png --prompt "a blue bag" \
    --steps 20 --guidance 4 --seed 1 --out $O/upscale-bag.png
ls -la $O
