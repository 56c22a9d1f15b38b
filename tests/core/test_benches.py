"""The GPU and batch benchmarks run end to end on the CPU with tiny sizes and the tiny test model (the
figures themselves are taken on real sizes; see the scripts' docstrings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench(script, *args, timeout=240):
    done = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bench_gpu_on_the_cpu_with_tiny_sizes(tiny_models_dir, tmp_path):
    out = bench("bench_gpu.py", "--size", 160, "--warmup-size", 64, "--device", "cpu", "--precisions", "fp32",
                "bf16", "--compare-io", "--models-dir", tiny_models_dir, "--model", "tiny-rgbn",
                "--workdir", tmp_path, "--json", tmp_path / "gpu.json")
    assert "[fp32] end to end:" in out and "end to end / raw =" in out and "[bf16] vs fp32:" in out
    figures = json.loads((tmp_path / "gpu.json").read_text())
    fp32 = figures["runs"]["fp32"]
    assert fp32["tiles"] == 9 and fp32["tiles_per_s"] > 0 and fp32["raw_forward"]["tiles_per_s"] > 0
    assert fp32["gpu_peak_mib"] is None and fp32["io_threads_on"]["tiles"] == 9
    assert figures["runs"]["bf16"]["precision"] == "fp32"               # the CPU runs float32
    assert figures["runs"]["bf16"]["vs_fp32"]["max_abs"] == 0


@pytest.mark.slow
def test_bench_batch_on_the_cpu_with_tiny_scenes(tiny_models_dir, tmp_path):
    out = bench("bench_batch.py", "--scenes", 2, "--size", 96, "--cores", 2, "--models-dir", tiny_models_dir,
                "--model", "tiny-rgbn", "--workdir", tmp_path)
    assert "1 worker(s) x 2 thread(s):" in out and "2 worker(s) x 1 thread(s):" in out
    assert "scaling 2 vs 1 worker(s):" in out
