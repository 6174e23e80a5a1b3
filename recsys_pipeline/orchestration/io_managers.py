"""IO managers: one file per asset under a configurable base path, written atomically.

Tables are Parquet, arrays `.npy`, the exported ranking model's arrays `.npz`, scaler parameters
JSON and the rating model `.keras`; nothing is pickled. Local files are written to a temporary file beside the target and renamed over it, so a
failed or killed run leaves the previous artifact intact. On an object store each artifact is
serialised to a local scratch file and streamed up in one `put_file` (a reader sees the previous
object or the new one), and read back by streaming it down with `get_file`: neither direction holds
a whole file in memory, so a memory-mapped distance matrix stays memory-mapped.
"""

import json
import resource
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import dagster as dg
import numpy as np
import pandas as pd
from upath import UPath

from recsys_pipeline.atomic import atomic_target
from recsys_pipeline.layout import EXTENSIONS, asset_format
from recsys_pipeline.sequential import SequentialModel
from recsys_pipeline.orchestration.config import refuse_bad_run_config


class _ArtifactIOManager(dg.UPathIOManager):
    """Serialise through a local file, atomically on local disks."""

    def write(self, obj: Any, path: Path) -> None:
        raise NotImplementedError

    def read(self, path: Path) -> Any:
        raise NotImplementedError

    def get_metadata(self, context: dg.OutputContext, obj: Any) -> dict[str, Any]:
        # The step's peak memory, inputs, computation and write included; the peak is then reset so
        # that under the in-process executor the next step measures its own.
        peak = peak_rss_bytes()
        reset_peak_rss()
        return {"peak_rss_mb": round(peak / 2**20, 1)}

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        with local_target(path) as local:
            self.write(obj, local)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no stored artifact for {context.asset_key.to_user_string()}; materialize it first.")
        with local_source(path) as local:
            return self.read(local)


class ParquetIOManager(_ArtifactIOManager):
    extension = EXTENSIONS["parquet"]

    def write(self, obj: pd.DataFrame, path: Path) -> None:
        obj.to_parquet(path, engine="pyarrow", index=False)

    def read(self, path: Path) -> pd.DataFrame:
        return pd.read_parquet(path, engine="pyarrow")


class NumpyIOManager(_ArtifactIOManager):
    extension = EXTENSIONS["npy"]

    def write(self, obj: Any, path: Path) -> None:
        if hasattr(obj, "write_npy"):  # an array too large to hold, streamed to disk block by block
            obj.write_npy(path)
            return
        with open(path, "wb") as file:
            np.save(file, np.asarray(obj), allow_pickle=False)

    def read(self, path: Path) -> np.ndarray:
        # Memory-mapped: a large distance matrix is paged in as it is read, not loaded whole.
        return np.load(path, mmap_mode="r", allow_pickle=False)


class JsonIOManager(_ArtifactIOManager):
    extension = EXTENSIONS["json"]

    def write(self, obj: dict, path: Path) -> None:
        path.write_text(json.dumps(obj, indent=2, sort_keys=True))

    def read(self, path: Path) -> dict:
        return json.loads(path.read_text())


class KerasIOManager(_ArtifactIOManager):
    extension = EXTENSIONS["keras"]

    def write(self, obj: Any, path: Path) -> None:
        obj.save(path)

    def read(self, path: Path) -> Any:
        from recsys_pipeline.two_tower import load_model  # TensorFlow only in steps that need it

        return load_model(str(path))


class RankingModelIOManager(_ArtifactIOManager):
    """The exported ranking model: named numpy arrays (np.savez), read back without pickle."""

    extension = EXTENSIONS["npz"]

    def write(self, obj: SequentialModel, path: Path) -> None:
        obj.save(path)

    def read(self, path: Path) -> SequentialModel:
        return SequentialModel.load(path)


class CandidateIOManager(_ArtifactIOManager):
    """A trained model together with its validation RMSE, in one `.keras` file."""

    extension = EXTENSIONS["candidate"]

    def write(self, obj: Any, path: Path) -> None:
        from recsys_pipeline.two_tower import save_candidate  # TensorFlow only in steps that need it

        save_candidate(obj, str(path))

    def read(self, path: Path) -> Any:
        from recsys_pipeline.two_tower import load_candidate

        return load_candidate(str(path))


# The resource key of each format's IO manager in the definitions.
IO_MANAGER_KEYS = {
    "parquet": "io_manager",
    "npy": "numpy_io_manager",
    "json": "json_io_manager",
    "keras": "keras_io_manager",
    "npz": "npz_io_manager",
    "candidate": "candidate_io_manager",
}


def io_manager_key(asset: str) -> str:
    """The IO manager that stores `asset` in the format recsys_pipeline.layout gives it."""
    return IO_MANAGER_KEYS[asset_format(asset)]


class ArtifactStore(dg.ConfigurableIOManagerFactory):
    """Stores each asset as `<base_path>/<asset key>.<format>`; `base_path` may be local or an fsspec URL."""

    base_path: str
    format: Literal["parquet", "npy", "json", "keras", "npz", "candidate"]

    MANAGERS: ClassVar[dict[str, type[_ArtifactIOManager]]] = {
        "parquet": ParquetIOManager,
        "npy": NumpyIOManager,
        "json": JsonIOManager,
        "keras": KerasIOManager,
        "npz": RankingModelIOManager,
        "candidate": CandidateIOManager,
    }

    def create_io_manager(self, context: dg.InitResourceContext) -> _ArtifactIOManager:
        # Every step stores through an artifact store, which starts before the step's work: a run
        # whose configuration is out of range is refused here, before any step computes or writes.
        if context.run is not None:
            refuse_bad_run_config(context.run.run_config)
        return self.MANAGERS[self.format](base_path=UPath(self.base_path))


@contextmanager
def local_target(path: UPath) -> Iterator[Path]:
    """A local file to write `path`'s new content to, published only if the block succeeds.

    On a local disk: a temporary file beside `path`, renamed over it. On an object store: a scratch
    file streamed up with `put_file` afterwards.
    """
    if _is_local(path):
        with atomic_target(path.path) as temporary:
            yield temporary
        return
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / path.name
        yield local
        path.fs.put_file(str(local), path.path)


@contextmanager
def local_source(path: UPath) -> Iterator[Path]:
    """A local file with `path`'s content: the file itself on a local disk, else a streamed download.

    On Linux a memory-mapped array stays readable after its scratch copy is deleted on exit.
    """
    if _is_local(path):
        yield Path(path.path)
        return
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / path.name
        path.fs.get_file(path.path, str(local))
        yield local


def peak_rss_bytes() -> int:
    """The largest resident set size of this process since it started or since `reset_peak_rss`."""
    try:  # Linux: the high-water mark, which reset_peak_rss can lower
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> None:
    """Lower the high-water mark to the current resident set size (Linux; elsewhere nothing happens)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")
