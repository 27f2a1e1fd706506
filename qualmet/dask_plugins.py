"""Worker plugins for the local Dask cluster that :class:`~qualmet.dask_executor.DaskExecutor` starts
(imported only there, with ``distributed`` installed)."""
from __future__ import annotations

from distributed import WorkerPlugin


class TorchThreads(WorkerPlugin):
    """Give each worker's torch ``n`` intra-op threads when it starts (also a worker restarted after a
    crash): the nanny's ``OMP_NUM_THREADS=1`` would leave all but one core per worker idle on a
    machine with more cores than workers."""

    def __init__(self, n: int) -> None:
        self.n = n

    def setup(self, worker) -> None:  # noqa: ANN001 - distributed's Worker
        import torch

        torch.set_num_threads(self.n)
