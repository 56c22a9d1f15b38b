"""A product-like cloud mask as the fill's cloud source, with and without a buffer. Prints figures, asserts
nothing.

The 20 real SEN12MS-CR pairs of other scenes in ../shared (``sen12ms-cr-testsplit``) come with the cloud
mask of the authors' pipeline (``mask/``, likely s2cloudless): a product mask as an analyst would have one.
``viser-cr-s-rgbn`` runs on each cloudy image with its own score, then with that mask as the cloud source
(``forward(x, cloud)``, what keep-clear with ``--cloud-mask`` fills) grown by 0 / 2 / 4 / 8 px
(``core.mask_codes.buffer_clouds``, ``--cloud-mask-buffer``), then added to the model's own clouds
(``--cloud-mask-mode add``) with 4 px. PSNR against the clear date (R, G, B, NIR
reflectance clipped to [0, 1]), per image and as means: over all pairs, and over the partly cloudy ones
(mask 2-95 %), where the buffer decides how much of a cloud's rim the fill draws from.

    .venv/bin/python bench/bench_mask_buffer.py [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

PAIRS = ROOT.parent / "shared" / "data" / "sen12ms-cr-testsplit"
BAND_OF = {"blue": 2, "green": 3, "red": 4, "nir": 8}  # 1-based band numbers of the 13-band L1C files
BUFFERS = (0, 2, 4, 8)


def read(path: Path, indexes=None):
    import rasterio

    with rasterio.open(path) as source:
        return source.read(indexes).astype("float32")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numpy as np
    import torch

    from viser_cr.core.mask_codes import buffer_clouds
    from viser_cr.training.evaluate import load_trained
    from viser_cr.training.gate_sweep import psnr  # the clean protocol: reflectance clipped to [0, 1]

    torch.set_num_threads(args.threads)
    net, bands, _, _ = load_trained(None, "viser-cr-s-rgbn")
    indexes = [BAND_OF[band] for band in bands]
    print(f"{'pair':18s} {'mask %':>6s} {'input':>6s} {'own':>6s} " + " ".join(f"{f'+{b}px':>6s}" for b in BUFFERS)
          + f" {'add':>6s}")
    rows, partly = [], []
    for cloudy_path in sorted((PAIRS / "cloudy").glob("*.tif")):
        cloudy = np.clip(read(cloudy_path, indexes) / 1e4, 0, 1)
        clear = read(PAIRS / "clear" / cloudy_path.name, indexes) / 1e4
        mask = read(PAIRS / "mask" / cloudy_path.name, 1) > 0
        x = torch.from_numpy(cloudy)[None]
        row = [psnr(cloudy, clear)]
        with torch.no_grad():
            row.append(psnr(net(x)[0][0].numpy(), clear))
            for pixels in BUFFERS:
                cloud = torch.from_numpy(buffer_clouds(mask, pixels).astype("float32"))[None, None]
                row.append(psnr(net(x, cloud)[0][0].numpy(), clear))
            net.use_mask_mode(True)
            cloud = torch.from_numpy(buffer_clouds(mask, 4).astype("float32"))[None, None]
            row.append(psnr(net(x, cloud)[0][0].numpy(), clear))
            net.use_mask_mode(False)
        rows.append(row)
        if 0.02 < mask.mean() < 0.95:
            partly.append(row)
        print(f"{cloudy_path.stem:18s} {100 * mask.mean():6.1f} " + " ".join(f"{v:6.2f}" for v in row))
    for label, group in (("all pairs", rows), ("mask 2-95 %", partly)):
        means = np.mean(group, axis=0)
        print(f"{label} ({len(group)}): input {means[0]:.2f}, own score {means[1]:.2f}, the mask "
              + ", ".join(f"+{b} px {m:.2f}" for b, m in zip(BUFFERS, means[2:-1], strict=True))
              + f", added to the own score (+4 px) {means[-1]:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
