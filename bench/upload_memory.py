"""Peak Python-heap memory and time of storing an uploaded .npz: the reader of today (headers
checked, arrays staged on disk and memory-mapped, converted in chunks) beside the whole-array
way it replaced (np.load of the upload's bytes, convert, np.save into a buffer, write).

    python bench/upload_memory.py [rows] [features]

tracemalloc counts numpy's buffers, so the peak is what the API process would hold for this
request; the upload's own bytes (in Starlette's spooled file) are not counted on either side.
"""

import io
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from service.datasets.arrays import save_arrays
from service.datasets.checks import Limits
from service.datasets.parsing import parse_upload
from service.storage import LocalStore

LIMITS = Limits(max_rows=5_000_000, max_features=1_000_000)


def whole_array_way(path: Path, store: LocalStore) -> None:
    data = path.read_bytes()
    npz = np.load(io.BytesIO(data), allow_pickle=False)
    X = np.ascontiguousarray(npz["X"], dtype=np.float32)
    assert np.isfinite(X).all()
    y = npz["y"].astype(np.int64)
    for name, array in (("X", X), ("y", y)):
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        store.put_bytes(f"old/{name}.npy", buf.getvalue())


def streamed_way(path: Path, store: LocalStore) -> None:
    with store.scratch() as scratch, open(path, "rb") as fh:
        arrays = parse_upload(fh, path.name, None, None, LIMITS, scratch)
        save_arrays(store, "new", arrays)
        del arrays


def measure(fn, path: Path, store: LocalStore) -> tuple[float, float]:
    tracemalloc.start()
    started = time.perf_counter()
    fn(path, store)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6, seconds


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    features = int(sys.argv[2]) if len(sys.argv) > 2 else 784
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.npz"
        X = np.random.default_rng(0).normal(size=(rows, features))
        np.savez(path, X=X, y=np.arange(rows) % 10)
        del X
        store = LocalStore(Path(folder) / "store")
        print(f"upload: {rows} x {features} float64, {path.stat().st_size / 1e6:.0f} MB")
        for label, fn in (("whole arrays", whole_array_way), ("streamed", streamed_way)):
            peak, seconds = measure(fn, path, store)
            print(f"{label:>13}: peak {peak:8.1f} MB  {seconds:6.2f} s")


if __name__ == "__main__":
    main()
