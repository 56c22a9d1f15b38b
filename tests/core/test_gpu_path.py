"""The GPU path, tested on the CPU: the batch size chosen from free memory (fake figures), the autocast
choice and its float32 fall-back, the reused host staging buffers, and reading / writing in their own
threads (same bytes as the sequential path, errors and cancels leave nothing behind)."""

import shutil
import threading

import numpy as np
import pytest
import rasterio
import torch

from viser_cr.core import device as dev
from viser_cr.core import pipeline, weights
from viser_cr.core.device import autocast_dtype, batch_size_for_memory
from viser_cr.core.errors import Cancelled, DeviceError
from viser_cr.core.pipeline import CloudRemovalRequest, HostStaging, Predictor, remove_clouds

GIB, MIB = 2**30, 2**20


@pytest.fixture
def s2_path(fixtures_dir, tmp_path):
    return shutil.copy(fixtures_dir / "s2l1c_cloudy_96.tif", tmp_path / "s2.tif")


def io_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("viser-cr-")]


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------ batch size


def test_batch_size_from_free_memory():
    assert batch_size_for_memory(2 * GIB, 300 * MIB) == 5            # 1.5 GiB usable / 300 MiB
    assert batch_size_for_memory(80 * GIB, 300 * MIB) == dev.MAX_GPU_BATCH
    assert batch_size_for_memory(80 * GIB, 300 * MIB, tiles=3) == 3   # never more than the raster's tiles
    assert batch_size_for_memory(100 * MIB, 300 * MIB) == 1           # one tile: out-of-memory handling takes over
    assert batch_size_for_memory(2 * GIB, 0) == 1
    assert batch_size_for_memory(2 * GIB, 300 * MIB, reserve=0.0, limit=100) == 6


def test_predictor_fits_its_batch_to_memory(monkeypatch):
    said = []
    predictor = Predictor(torch.nn.Identity(), torch.device("cpu"), None, say=said.append)
    assert predictor.batch_size == dev.CPU_BATCH_SIZE and predictor.tile_memory(np.zeros((1, 1, 3, 8, 8))) == 0
    assert predictor.fit_batch_to_memory(np.zeros((1, 1, 3, 256, 256), np.float32), 100) == 4  # the CPU keeps 4
    monkeypatch.setattr(pipeline, "free_memory", lambda device: 10 * GIB)
    monkeypatch.setattr(Predictor, "tile_memory", lambda self, x: 500 * MIB)
    assert predictor.fit_batch_to_memory(np.zeros((1, 1, 3, 256, 256), np.float32), 100) == 15
    assert said[0].startswith("Batch size 15: 10.0 GiB free on cpu (")
    assert said[0].endswith("), 500 MiB per 256-pixel tile (fp32).")


# ------------------------------------------------------------------------------------------ autocast


def test_autocast_is_cuda_only_and_checks_the_gpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    for precision in dev.PRECISIONS:
        assert autocast_dtype(cpu, precision) is None
    with pytest.raises(DeviceError, match="unknown precision 'fp8'"):
        autocast_dtype(cpu, "fp8")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype(cuda, "fp32") is None
    assert autocast_dtype(cuda, "bf16") is torch.bfloat16 and autocast_dtype(cuda, "auto") is torch.bfloat16
    assert autocast_dtype(cuda, "fp16") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(dev, "describe_device", lambda device: "cuda:0 (an old GPU)")
    assert autocast_dtype(cuda, "auto") is None
    with pytest.raises(DeviceError, match="no bfloat16 support: use --precision fp16 or fp32"):
        autocast_dtype(cuda, "bf16")


class OverflowsUnderAutocast(torch.nn.Module):
    """Returns inf under autocast (as a model whose activations overflow float16 would)."""

    def __init__(self):
        super().__init__()
        self.autocast_calls = 0

    def forward(self, x):
        image, score = x[:, :3] * 1.0, torch.zeros_like(x[:, :1])
        if torch.is_autocast_enabled("cpu"):
            self.autocast_calls += 1
            return image + float("inf"), score
        return image, score


def test_autocast_overflow_falls_back_to_float32():
    """CPU autocast stands in for CUDA's here: the fall-back logic is the same."""
    said = []
    model = OverflowsUnderAutocast()
    predictor = Predictor(model, torch.device("cpu"), 2, say=said.append)
    predictor.autocast = torch.bfloat16
    x = np.random.rand(3, 1, 3, 16, 16).astype(np.float32)
    image = predictor.predict(x).image
    np.testing.assert_array_equal(image, x[:, 0])
    assert model.autocast_calls == 1 and predictor.precision == "fp32"
    assert said == ["The model overflowed in bf16: running float32 from here on."]


class FailsUnderAutocast(torch.nn.Module):
    def forward(self, x):
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("expected scalar type Float but found BFloat16\nmore detail")
        return x[:, :3] * 1.0, torch.zeros_like(x[:, :1])


def test_a_model_without_reduced_precision_kernels_runs_float32():
    said = []
    predictor = Predictor(FailsUnderAutocast(), torch.device("cpu"), 4, say=said.append)
    predictor.autocast = torch.bfloat16
    x = np.random.rand(2, 1, 3, 16, 16).astype(np.float32)
    np.testing.assert_array_equal(predictor.predict(x)[0], x[:, 0])
    assert said == ["The model cannot run in bf16 (expected scalar type Float but found BFloat16): "
                    "running float32 from here on."]
    assert predictor.precision == "fp32"


def test_bf16_autocast_stays_close_to_float32(tiny_model_card):
    model, _ = weights.load_model(tiny_model_card)
    x = np.random.default_rng(0).random((2, 1, 4, 32, 32), dtype=np.float32) * 0.4
    exact = Predictor(model, torch.device("cpu"), 2).predict(x).image
    half = Predictor(model, torch.device("cpu"), 2)
    half.autocast = torch.bfloat16
    approx = half.predict(x).image
    assert half.precision == "bf16" and np.isfinite(approx).all()
    assert np.abs(approx - exact).max() < 0.05


def test_precision_on_the_cpu_runs_float32(tiny_models_dir, s2_path, tmp_path, one_torch_thread):
    result = remove_clouds(CloudRemovalRequest([s2_path], tmp_path / "o.tif", models_dir=tiny_models_dir,
                                               precision="bf16", device="cpu"))
    assert result.precision == "fp32" and result.batch_size == dev.CPU_BATCH_SIZE
    assert "Precision bf16 applies to CUDA GPUs: running float32 on the CPU." in result.messages
    assert any(m.startswith(f"{result.tiles} tiles in ") and "tiles/s" in m and "Mpx/s on cpu" in m
               for m in result.messages)
    assert result.tiles_per_second > 0


# ---------------------------------------------------------------------------------- host staging


def test_host_staging_reuses_and_grows_its_buffers():
    staging = HostStaging(torch.device("cpu"), pin=False)  # pinned memory needs a GPU; the logic does not
    big = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    moved = staging.to_device(big)
    np.testing.assert_array_equal(moved.numpy(), big)
    storage = staging.buffers["input"].data_ptr()
    small = staging.to_device(big[:1] + 1)
    np.testing.assert_array_equal(small.numpy(), big[:1] + 1)
    assert staging.buffers["input"].data_ptr() == storage           # reused, not reallocated
    staging.to_device(np.zeros((4, 3, 8, 8), np.float32))
    assert staging.buffers["input"].numel() == 4 * 3 * 8 * 8          # grown
    back = staging.to_host(torch.ones(2, 5), "image")
    back[:] = 7                                                       # a copy: the buffer is reused next batch
    assert staging.to_host(torch.zeros(2, 5), "image").sum() == 0


def test_predictor_with_staging_gives_the_same_output(tiny_model_card):
    model, _ = weights.load_model(tiny_model_card)
    x = np.random.default_rng(1).random((5, 1, 4, 24, 24), dtype=np.float32)
    plain = Predictor(model, torch.device("cpu"), 2).predict(x)
    staged = Predictor(model, torch.device("cpu"), 2, staging=HostStaging(torch.device("cpu"), pin=False)).predict(x)
    for a, b in zip(plain[:2], staged[:2], strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ reader / writer threads


def run(path, out, tiny_models_dir, **extra):
    return remove_clouds(CloudRemovalRequest([path], out, models_dir=tiny_models_dir, tile_size=32, overlap=8,
                                             device="cpu", **extra))


def test_io_threads_write_the_same_bytes(tiny_models_dir, s2_path, tmp_path, one_torch_thread):
    products = {}
    for overlap_io in (False, True):
        out, score = tmp_path / f"o-{overlap_io}.tif", tmp_path / f"s-{overlap_io}.tif"
        result = run(s2_path, out, tiny_models_dir, score_output=score, keep_clear=True, overlap_io=overlap_io,
                     batch_size=3)
        assert result.tiles == 16
        with rasterio.open(out) as o, rasterio.open(score) as s:
            products[overlap_io] = (o.read(), s.read())
    np.testing.assert_array_equal(products[False][0], products[True][0])
    np.testing.assert_array_equal(products[False][1], products[True][1])
    assert io_threads() == []


def test_the_cpu_streams_without_threads_by_default(monkeypatch, tiny_models_dir, s2_path, tmp_path,
                                                    one_torch_thread):
    def no_threads(*args, **kwargs):
        raise AssertionError("the CPU path must not start I/O threads by default")

    monkeypatch.setattr(pipeline, "_Reader", no_threads)
    run(s2_path, tmp_path / "o.tif", tiny_models_dir)


def test_a_writer_error_stops_the_run_and_leaves_nothing(monkeypatch, tiny_models_dir, s2_path, tmp_path,
                                                         one_torch_thread):
    calls = []

    def broken_add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")

    monkeypatch.setattr(pipeline._Writer, "add", broken_add)
    with pytest.raises(OSError, match="disk full"):
        run(s2_path, tmp_path / "o.tif", tiny_models_dir, overlap_io=True, batch_size=2)
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.tif").exists() and io_threads() == []


def test_a_reader_error_stops_the_run(monkeypatch, tiny_models_dir, s2_path, tmp_path, one_torch_thread):
    original = pipeline._Strips._read

    def failing_read(self, row):
        if row == 2:
            raise rasterio.errors.RasterioIOError("read failed: corrupt block")
        return original(self, row)

    monkeypatch.setattr(pipeline._Strips, "_read", failing_read)
    with pytest.raises(rasterio.errors.RasterioIOError, match="corrupt block"):
        run(s2_path, tmp_path / "o.tif", tiny_models_dir, overlap_io=True, batch_size=2)
    assert leftovers(tmp_path) == [] and io_threads() == []


def test_cancel_with_io_threads(tiny_models_dir, s2_path, tmp_path, one_torch_thread):
    seen = []
    request = CloudRemovalRequest([s2_path], tmp_path / "o.tif", models_dir=tiny_models_dir, tile_size=32,
                                  overlap=8, overlap_io=True, batch_size=2)
    with pytest.raises(Cancelled):
        remove_clouds(request, progress=lambda f, m: seen.append(f), is_cancelled=lambda: len(seen) >= 2)
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.tif").exists() and io_threads() == []


def test_out_of_memory_with_io_threads_retries_smaller_tiles(monkeypatch, tiny_models_dir, fixtures_dir,
                                                             tmp_path):
    class OomModel(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 1 or x.shape[-1] > 64:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return x[:, :3], torch.zeros_like(x[:, :1])

    monkeypatch.setattr(weights, "load_model",
                        lambda card, device="cpu", models_dir=None: (OomModel(), weights.find_model(card, models_dir)))
    out = tmp_path / "out.tif"
    result = remove_clouds(CloudRemovalRequest([fixtures_dir / "landsat7_rgb8_collar_96.tif"], out,
                                               models_dir=tiny_models_dir, tile_size=128, overlap=16,
                                               overlap_io=True))
    assert any("retrying with 64-pixel tiles" in m for m in result.messages)
    assert out.exists() and leftovers(tmp_path) == [] and io_threads() == []
