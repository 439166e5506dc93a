"""A slot's training table in GPU memory: the CPU table's layout, hash and seeds, GPU kernels.

:class:`CudaEmbeddingTable` answers the same calls as :class:`~streamrec.embedding.table.EmbeddingTable`
(``admit``, ``apply_gradients``, ``lookup``, ``rows_of``, ``evict_expired``, ``export_delta``,
``export_full``, ``state_arrays``) with every per-id step a kernel of ``cuda_kernels.py``; rows,
optimizer state, ``last_update``, ``dirty``, the free list, the admission sketch and the cuckoo
buckets are torch tensors on the GPU (numba kernels read the same memory through
``__cuda_array_interface__``, or a direct ``cuLaunchKernel`` with the tensors' pointers, on torch's
stream).

What stays the same as on the CPU, by construction:

* the index's bytes: :meth:`CudaEmbeddingTable.to_cpu` / :meth:`from_cpu` copy buckets, seeds, the
  seed key and counter, and every row array, so a table moves CPU <-> GPU without rehashing and
  :meth:`state_arrays` writes exactly the CPU snapshot format (the sketch as uint8);
* a new row's initial vector (the same counter-based generator), the optimizers' arithmetic,
  the order rows are taken from the free list, admission after ``admit_after`` occurrences.

What differs: ids are deduplicated per batch before admission, so the sketch sees a batch's
occurrences of an id at once (the same counts unless two ids of one batch share every sketch cell);
ids land in the emptier of their two buckets, so positions (not contents) differ from a CPU table
fed the same ids; growth is decided before a batch as well as on a failed walk (projected load
above 0.97); a hash flood the index cannot place raises :class:`IndexFloodError` instead of
refusing the one id.

**The allocator lives on the device; the host settles lazily.** A training call
(:meth:`~CudaEmbeddingTable.admit_distinct`, or the module's grouped step through
:meth:`~CudaEmbeddingTable.find_or_insert_sorted`) reads nothing back: the kernels take rows by
tickets on a device counter (``_ctr``: rows taken, failed walks, ids not admitted), and the launches
that depend on a count (the spilled ids' walk, the new rows' init) cover the batch size with the
threads past the device's count exiting. The host keeps only an upper bound of the rows taken
since it last read the counters (``_pending``: the batch sizes), and grows row capacity and the
index *ahead* by that bound (so a table may hold up to one batch more rows and buckets than the
per-id path would); only when the bound says growth may be due does it settle first (one read)
and grow on the exact counts. A walk that fails (the index needs to grow) leaves its pair on the
device, with its row, where later finds see it; the settle grows the index with it, nothing lost.
Every other call (reads, expiry, deltas, snapshots, stats, ``len``) settles first.
:func:`settle_tables` settles many tables in one read (the module does it once per step, with
the gradient check's flags). :data:`COUNTS` tallies launches and device reads for the benches.

``device="cuda"`` under ``NUMBA_ENABLE_CUDASIM=1`` runs the same kernels in Numba's CUDA simulator
with the tensors in host memory: that is how the tests run without a GPU.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import astuple

import msgspec
import numpy as np
import torch

from streamrec.embedding.config import FTRL, SGD, Adagrad, Adam, SlotConfig
from streamrec.embedding.cuckoo import (
    BUCKET,
    GROW_LOAD,
    GROWTH,
    MAX_REHASHES,
    MIN_GROWTH_LOAD,
    REHASHES_BEFORE_GROWTH,
    STRIDE,
    CuckooIndex,
    _keyed_seed,
    py_mix64,
)
from streamrec.embedding.delta import TableDelta
from streamrec.embedding.initializers import initializer_params
from streamrec.embedding.optimizers import make_optimizer
from streamrec.embedding.table import EmbeddingTable, TableStats, check_time
from streamrec.errors import IndexFloodError, InvalidInputError, NonFiniteGradientError, StreamrecError

_MASK64 = (1 << 64) - 1
PREGROW_LOAD = 0.97  # a batch that could push the index past this load grows it first


class DeviceUnavailableError(StreamrecError, RuntimeError):
    """``device="cuda"`` was asked for where no CUDA GPU (nor the simulator) is available."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        super().__init__(f"device {device!r}: {reason}")


def check_device(device: object, field: str = "device") -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``; anything else raises naming ``field``."""
    if isinstance(device, str):
        if device == "cpu" or device == "cuda":
            return device
        if device.startswith("cuda:") and device[5:].isdigit():
            return device
    raise InvalidInputError(field, device, 'device must be "cpu", "cuda" or "cuda:N"')


def simulated() -> bool:
    """True when numba's CUDA target is its CPU simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def torch_device(device: str) -> torch.device:
    """Where a ``device="cuda[:N]"`` table keeps its tensors: that GPU, or host memory under the
    simulator. Raises :class:`DeviceUnavailableError` (one line, no traceback needed) otherwise."""
    device = check_device(device)
    if device == "cpu":
        return torch.device("cpu")
    if simulated():
        return torch.device("cpu")
    try:
        _kernels()  # imports numba-cuda (after its NumPy shim)
    except ImportError:
        raise DeviceUnavailableError(device, "the GPU path needs numba-cuda (pip install 'streamrec[cuda]')") from None
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            device,
            "no CUDA GPU is available to torch (torch.cuda.is_available() is False); "
            "set NUMBA_ENABLE_CUDASIM=1 to run the GPU kernels on the CPU simulator",
        )
    target = torch.device(device)
    if target.index is not None and target.index >= torch.cuda.device_count():
        raise DeviceUnavailableError(device, f"only {torch.cuda.device_count()} CUDA device(s) present")
    return target


COUNTS = {"launches": 0, "syncs": 0}
"""Process-wide tallies of the GPU path's own work: numba kernel launches (``_Launcher``) and host
reads of device memory (:func:`device_read`, each a host sync on a GPU). ``bench training``
reports them per step; the tests bound them."""


def device_read(t: torch.Tensor) -> torch.Tensor:
    """``t`` copied to the host: the one way this module reads device memory (counted)."""
    COUNTS["syncs"] += 1
    return t.cpu()


class _Launcher:
    """Launches numba kernels on torch's current stream, tensors passed zero-copy.

    The first launch of a kernel with given argument kinds goes through numba's dispatcher
    (which compiles it); later ones call ``cuLaunchKernel`` on the compiled function with the
    tensors' pointers, shapes and strides packed as numba lays out an array argument. Measured on
    an H200: the dispatcher with ``__cuda_array_interface__`` conversions costs 40-160 us a launch,
    the direct call about 13 us, which is what lets a 26-slot step make its ~100 launches.
    Under the simulator every launch goes through the (simulated) dispatcher.
    """

    def __init__(self, device: torch.device) -> None:
        _kernels()  # first: it makes numba-cuda importable under NumPy >= 2.5
        from numba import cuda

        self.cuda = cuda
        self.device = device
        self.sim = device.type != "cuda"
        self._streams: dict[int, object] = {}
        self._compiled: dict[tuple, tuple | None] = {}
        self.launches = {"direct": 0, "dispatcher": 0}

    def arr(self, t: torch.Tensor):
        if self.sim:  # wrapped, not handed over as numpy: the simulator would copy in and out
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

            return FakeCUDAArray(t.numpy())
        return t

    def _numba_stream(self, handle: int):
        if handle == 0:
            return 0
        s = self._streams.get(handle)
        if s is None:
            s = self._streams[handle] = self.cuda.external_stream(handle)
        return s

    def __call__(self, kernel, n: int, *args, threads: int = 256) -> None:
        if n <= 0:
            return
        COUNTS["launches"] += 1
        if self.sim:
            threads = min(threads, 64)
            kernel[(n + threads - 1) // threads, threads, 0](*args)
            return
        blocks = (n + threads - 1) // threads
        stream = torch.cuda.current_stream(self.device).cuda_stream
        packed = [_packed(a) for a in args]
        key = (kernel, tuple(p[0] for p in packed))
        entry = self._compiled.get(key, False)
        if entry is False or entry is None:
            self._dispatch(kernel, key, args, blocks, threads, stream, first=entry is False)
            return
        func, ctypes_types = entry
        self.launches["direct"] += 1
        values: list = []
        for p in packed:
            values += p[1]
        (err,) = self._driver.cuLaunchKernel(
            func, blocks, 1, 1, threads, 1, 1, 0, stream, (tuple(values), ctypes_types), 0
        )
        if err != self._driver.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuLaunchKernel of {kernel.py_func.__name__} failed: {err!r}")

    def _dispatch(self, kernel, key, args, blocks, threads, stream, first: bool) -> None:
        """Launch through numba's dispatcher (compiling if needed); the first time, remember the
        compiled function and its parameter layout for direct launches."""
        import numba

        converted = [
            self.cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=a, sync=False)
            if isinstance(a, torch.Tensor)
            else a
            for a in args
        ]
        kernel[blocks, threads, self._numba_stream(stream)](*converted)
        self.launches["dispatcher"] += 1
        if not first or os.environ.get("STREAMREC_CUDA_DIRECT_LAUNCH", "1") == "0":
            return
        self._compiled[key] = None  # the dispatcher stays in use unless all below works
        try:
            import ctypes

            from cuda.bindings import driver

            signature = tuple(numba.typeof(a) for a in converted)
            compiled = kernel.overloads[signature]
            func = compiled._codelibrary.get_cufunc().handle
            scalar = {
                "int64": ctypes.c_int64, "uint64": ctypes.c_uint64, "int32": ctypes.c_int32,
                "uint32": ctypes.c_uint32, "float32": ctypes.c_float, "float64": ctypes.c_double,
            }  # fmt: skip
            layout: list = []
            for ty in signature:
                if isinstance(ty, numba.types.Array):
                    layout += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
                    layout += [ctypes.c_int64] * (2 * ty.ndim)
                else:
                    layout.append(scalar[str(ty)])
        except Exception:  # any doubt about the layout: keep numba's own launch path (correct, slower)
            return
        self._driver = driver
        self._compiled[key] = (func, tuple(layout))


def _packed(a: object) -> tuple[tuple, tuple]:
    """(what decides a kernel's compiled signature: dtype, rank and contiguity, or a scalar's type;
    the argument's values as numba lays out the parameter). A tensor's pair is computed once and
    kept on the tensor (its pointer, shape and strides never change: nothing here resizes a tensor
    in place), which saves most of a direct launch's Python time for the tables' own arrays."""
    if isinstance(a, torch.Tensor):
        cached = getattr(a, "_streamrec_launch_args", None)
        if cached is None:
            size = a.element_size()
            values = (0, 0, a.numel(), size, a.data_ptr(), *a.shape, *(st * size for st in a.stride()))
            cached = ((a.dtype, a.dim(), a.is_contiguous()), values)
            a._streamrec_launch_args = cached
        return cached
    return (type(a),), (int(a) if isinstance(a, int | np.integer) else float(a),)


def _kernels():
    from streamrec.embedding import cuda_kernels

    return cuda_kernels


class CudaCuckooIndex:
    """The cuckoo index of ``cuckoo.py`` in device memory: same buckets, seeds and seed key.

    Built from a CPU index (:meth:`from_cpu`) or its snapshot arrays (:meth:`from_state`);
    :meth:`to_cpu` and :meth:`state` give them back, byte for byte."""

    def __init__(self, launcher: _Launcher) -> None:
        self.launch = launcher
        self.device = launcher.device
        self._walks = 0

    # -- construction and transfer -------------------------------------------------------------
    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], launcher: _Launcher) -> CudaCuckooIndex:
        index = cls(launcher)
        secret = state.get("secret")
        index._key = bytes(np.asarray(secret, dtype=np.uint8)) if secret is not None else secrets.token_bytes(16)
        n_buckets, size, s1, s2, rng, counter = (int(np.uint64(v)) for v in state["meta"])
        index.n_buckets, index.size = n_buckets, size
        index.seed1, index.seed2 = np.uint64(s1), np.uint64(s2)
        index.rng = torch.tensor([rng - (1 << 64) if rng >= 1 << 63 else rng], dtype=torch.int64, device=index.device)
        index._seed_counter = counter
        index.growth_loads = [float(x) for x in state.get("growth_loads", ())]
        index.rehash_loads = [float(x) for x in state.get("rehash_loads", ())]
        buckets = np.ascontiguousarray(state["buckets"], dtype=np.int64)
        index._set_buckets(torch.from_numpy(buckets.copy()).to(index.device))
        return index

    @classmethod
    def from_cpu(cls, index: CuckooIndex, launcher: _Launcher) -> CudaCuckooIndex:
        return cls.from_state(index.state(), launcher)

    def state(self) -> dict[str, np.ndarray]:
        """The arrays of :meth:`CuckooIndex.state` (host copies): the CPU snapshot format."""
        rng = int(self.rng.cpu()[0]) & _MASK64
        out = {
            "buckets": self.buckets.cpu().numpy(),
            "meta": np.array(
                [self.n_buckets, self.size, self.seed1, self.seed2, rng, self._seed_counter], dtype=np.uint64
            ),
            "growth_loads": np.array(self.growth_loads, dtype=np.float64),
            "rehash_loads": np.array(self.rehash_loads, dtype=np.float64),
            "secret": np.frombuffer(self._key, dtype=np.uint8),
        }
        return out

    def to_cpu(self) -> CuckooIndex:
        return CuckooIndex.from_state(self.state())

    def _set_buckets(self, buckets: torch.Tensor, locks: torch.Tensor | None = None) -> None:
        self.buckets = buckets
        self.rows_t = buckets.view(torch.int32)
        n_buckets = buckets.numel() // STRIDE
        self._locks = locks if locks is not None else torch.zeros(n_buckets, dtype=torch.int32, device=self.device)
        self.k = self.launch.arr(buckets)
        self.r = self.launch.arr(self.rows_t)

    def _next_seed(self) -> np.uint64:
        self._seed_counter = (self._seed_counter + int(np.uint64(0x9E3779B97F4A7C15))) & _MASK64
        return _keyed_seed(self._key, self._seed_counter)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def positions(self) -> int:
        return self.n_buckets * BUCKET

    @property
    def load_factor(self) -> float:
        return self.size / self.positions

    @property
    def nbytes(self) -> int:
        return self.buckets.numel() * 8

    # -- per-id operations -----------------------------------------------------------------------
    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``ids`` (int64 tensor on the device), -1 where absent."""
        out = torch.empty(ids.shape[0], dtype=torch.int32, device=self.device)
        K = _kernels()
        self.launch(K.lookup_rows, ids.shape[0], self.k, self.r, self.n_buckets, self.seed1, self.seed2,
                    self.launch.arr(ids), self.launch.arr(out))  # fmt: skip
        return out

    def gather(self, ids: torch.Tensor, weights: torch.Tensor, default: torch.Tensor, out: torch.Tensor | None = None):
        """``weights[row of id]`` (``default`` where absent), one fused probe-and-copy kernel."""
        dim = weights.shape[1]
        if out is None:
            out = torch.empty((ids.shape[0], dim), dtype=weights.dtype, device=self.device)
        shift = max(0, min(5, (dim - 1).bit_length()))  # lanes per row: dim rounded up to 2**k, <= 32
        a = self.launch.arr
        self.launch(_kernels().lookup_gather, ids.shape[0], self.k, self.r, self.n_buckets, self.seed1,
                    self.seed2, a(ids), a(weights.view(-1)), a(default), a(out.view(-1)), dim, shift,
                    0 if self.launch.sim else 1)  # fmt: skip
        return out

    def insert(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        """Insert distinct absent ``ids`` with ``rows`` (both on the device), growing as needed."""
        n = ids.shape[0]
        if n == 0:
            return
        self.reserve(n)
        tickets = torch.zeros(2, dtype=torch.int64, device=self.device)
        spill_ids = torch.empty(n, dtype=torch.int64, device=self.device)
        spill_rows = torch.empty(n, dtype=torch.int32, device=self.device)
        K, a = _kernels(), self.launch.arr
        # find_admit with admission off and rows given: reuse rebuild_claim's shape instead.
        self.launch(K.claim_given, n, self.k, self.r, self.n_buckets, self.seed1, self.seed2, a(ids), a(rows),
                    a(tickets), a(spill_ids), a(spill_rows))  # fmt: skip
        self.size += n
        self.place_spilled(spill_ids, spill_rows, int(tickets[1]))

    def reserve(self, incoming: int) -> None:
        """Grow before a batch that could take the index past ``PREGROW_LOAD``."""
        needed = self.size + incoming
        if needed > PREGROW_LOAD * self.positions:
            target = max(math.ceil(self.n_buckets * GROWTH), math.ceil(needed / (0.9 * BUCKET)))
            load = self.load_factor
            for n_buckets in [target, *(math.ceil(target * 1.1**k) for k in range(1, MAX_REHASHES))]:
                if self._rebuilt(n_buckets, None):
                    self.growth_loads.append(load)
                    return
            raise IndexFloodError(0, -1, load, MAX_REHASHES, min_growth_load=MIN_GROWTH_LOAD)

    def place_spilled(self, spill_ids: torch.Tensor, spill_rows: torch.Tensor, n: int) -> None:
        """Walk the pairs whose buckets were full (in parallel, :func:`walk_spilled`); pairs whose
        walk failed grow the index on the device, with them, nothing lost."""
        if n <= 0:
            return
        fail_ids, fail_rows = self._walk(self.k, self.r, self.n_buckets, self.seed1, self.seed2, self._locks,
                                         spill_ids, spill_rows, n)  # fmt: skip
        if fail_ids.numel():
            self.grow(homeless=(fail_ids, fail_rows))

    def walk_seed(self) -> np.int64:
        """A fresh seed for the next launch of :func:`walk_spilled`."""
        self._walks += 1
        return np.int64(py_mix64(self._walks ^ int(self.seed1)) >> 1)

    def _walk(self, k, r, n_buckets, seed1, seed2, locks, spill_ids, spill_rows, n):
        counters = torch.tensor([0, n], dtype=torch.int64).to(self.device)  # [fails, pairs]
        fail_ids = torch.empty(n, dtype=torch.int64, device=self.device)
        fail_rows = torch.empty(n, dtype=torch.int32, device=self.device)
        a = self.launch.arr
        self.launch(_kernels().walk_spilled, n, k, r, n_buckets, seed1, seed2, a(locks), a(spill_ids), a(spill_rows),
                    a(counters), 1, 0, self.walk_seed(), _kernels().MAX_KICKS, a(fail_ids), a(fail_rows))  # fmt: skip
        failed = int(device_read(counters)[0])
        return fail_ids[:failed], fail_rows[:failed]

    def grow(self, homeless: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """The CPU's policy (``CuckooIndex.grow``), for the pairs ``homeless`` left out by failed
        walks: fresh seeds in place below ``MIN_GROWTH_LOAD``, a few tries then 1.5x up to
        ``GROW_LOAD``, 1.5x above it; every try is a rebuild on the device."""
        n_out = 0 if homeless is None else int(homeless[0].numel())
        held = self.size - n_out
        load = held / self.positions
        if load < MIN_GROWTH_LOAD:
            targets = [self.n_buckets] * MAX_REHASHES
        else:
            targets = [self.n_buckets] * (REHASHES_BEFORE_GROWTH if load < GROW_LOAD else 0)
            targets.append(math.ceil(self.n_buckets * GROWTH))
            for _ in range(MAX_REHASHES - 1):
                targets.append(math.ceil(targets[-1] * 1.1))
        n_before = self.n_buckets
        for n_buckets in targets:
            if self._rebuilt(n_buckets, homeless):
                (self.growth_loads if n_buckets > n_before else self.rehash_loads).append(load)
                return
        self.size = held
        key, row = (int(homeless[0][0]), int(homeless[1][0])) if n_out else (0, -1)
        raise IndexFloodError(key, row, load, len(targets), min_growth_load=MIN_GROWTH_LOAD)

    def _rebuilt(self, n_buckets: int, homeless: tuple[torch.Tensor, torch.Tensor] | None) -> bool:
        """One try on the device: fresh seeds, ``n_buckets``, every held pair (parallel claims,
        then parallel walks for the spilled) and ``homeless``; the old buckets stay unless all fit."""
        if n_buckets >= 2**32:
            raise MemoryError("cuckoo index cannot exceed 2**32 buckets")
        new = torch.zeros(n_buckets * STRIDE, dtype=torch.int64, device=self.device)
        new.view(torch.int32).view(n_buckets, 2 * STRIDE)[:, 10:] = -1
        seed1, seed2 = self._next_seed(), self._next_seed()
        K, a = _kernels(), self.launch.arr
        extra = 0 if homeless is None else int(homeless[0].numel())
        room = self.size + extra + 1
        tickets = torch.zeros(2, dtype=torch.int64, device=self.device)
        spill_ids = torch.empty(room, dtype=torch.int64, device=self.device)
        spill_rows = torch.empty(room, dtype=torch.int32, device=self.device)
        new_rows = new.view(torch.int32)
        nk, nr = a(new), a(new_rows)
        self.launch(K.rebuild_claim, self.n_buckets * BUCKET, self.k, self.r, nk, nr, n_buckets, seed1, seed2,
                    a(tickets), a(spill_ids), a(spill_rows))  # fmt: skip
        n = int(tickets[1])
        if extra:
            spill_ids[n : n + extra] = homeless[0]
            spill_rows[n : n + extra] = homeless[1]
            n += extra
        locks = torch.zeros(n_buckets, dtype=torch.int32, device=self.device)
        if n:
            fail_ids, _ = self._walk(nk, nr, n_buckets, seed1, seed2, locks, spill_ids, spill_rows, n)
            if fail_ids.numel():
                return False
        self.n_buckets, self.seed1, self.seed2 = n_buckets, seed1, seed2
        self._set_buckets(new, locks)
        return True

    def delete(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove ``ids`` (absent ones ignored); returns (rows freed, their ids)."""
        ids = torch.unique(ids)
        tickets = torch.zeros(1, dtype=torch.int64, device=self.device)
        freed = torch.empty(ids.shape[0], dtype=torch.int32, device=self.device)
        freed_ids = torch.empty(ids.shape[0], dtype=torch.int64, device=self.device)
        a = self.launch.arr
        self.launch(_kernels().delete_ids, ids.shape[0], self.k, self.r, self.n_buckets, self.seed1, self.seed2,
                    a(ids), a(tickets), a(freed), a(freed_ids))  # fmt: skip
        n = int(tickets[0])
        self.size -= n
        return freed[:n], freed_ids[:n]

    def items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All (ids, rows) held, in position order (device tensors)."""
        keys = self.buckets.view(self.n_buckets, STRIDE)[:, :BUCKET]
        rows = self.rows_t.view(self.n_buckets, 2 * STRIDE)[:, 10 : 10 + BUCKET]
        held = rows >= 0
        return keys[held], rows[held]

    def positions_to_items(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.sort(positions).values
        return self.buckets[positions], self.rows_t[positions + (positions & ~7) + 10]


class CudaEmbeddingTable:
    """One slot's training table in GPU memory (see the module docstring).

    Parameters are those of :class:`EmbeddingTable`, plus ``device`` (``"cuda"`` or ``"cuda:N"``).
    Ids may be numpy arrays, lists or tensors on any device; the read calls return host numpy
    (``lookup``, ``rows_of``: as the CPU table) and :meth:`lookup_tensor` / :meth:`admit_distinct`
    keep everything on the device for training.
    """

    def __init__(self, slot: str, config: SlotConfig, seed: int = 0, device: str = "cuda") -> None:
        # Seeds, sketch and counters from a one-row CPU table; the arrays are sized on the device.
        cpu = EmbeddingTable(slot, msgspec.structs.replace(config, capacity=1), seed)
        cpu.config = config
        self._setup(cpu, device)
        self._ensure_rows(config.capacity, exact=True)
        n_buckets = max(1, math.ceil(config.capacity / (0.9 * BUCKET)))
        if n_buckets > self.index.n_buckets:
            self.index._rebuilt(n_buckets, None)

    @classmethod
    def from_cpu(cls, table: EmbeddingTable, device: str = "cuda") -> CudaEmbeddingTable:
        """A GPU copy of ``table``: the same index bytes, rows, state and counters."""
        out = cls.__new__(cls)
        out._setup(table, device)
        return out

    def _setup(self, cpu: EmbeddingTable, device: str) -> None:
        self.device_name = check_device(device)
        self.device = torch_device(self.device_name)
        self.launch = _Launcher(self.device)
        self.slot, self.config, self.dim, self.seed = cpu.slot, cpu.config, cpu.dim, cpu.seed
        self.optimizer = make_optimizer(self.config.optimizer)
        self.step = cpu.step
        self._stats = TableStats(*astuple(cpu.stats))
        self._init = initializer_params(self.config.initializer)
        self.index = CudaCuckooIndex.from_cpu(cpu.index, self.launch)
        dev = self.device
        self._weights = torch.from_numpy(np.ascontiguousarray(cpu._weights)).to(dev, copy=True)
        names = list(cpu._state)
        self._state_names = names
        self._state_all = (
            torch.stack([torch.from_numpy(np.ascontiguousarray(cpu._state[k])) for k in names]).to(dev)
            if names
            else torch.zeros((0, 1, self.dim), dtype=torch.float32, device=dev)
        )
        self._state_init = torch.tensor([self.optimizer.initial_state(k) for k in names], dtype=torch.float32).to(dev)
        self._last_update = torch.from_numpy(cpu._last_update.astype(np.int64)).to(dev)  # uint32 seconds, widened
        self._dirty = torch.from_numpy(cpu._dirty).to(dev, copy=True)
        self._free = torch.from_numpy(cpu._free[: int(cpu._alloc[0])].copy()).to(dev)
        self._high_water, self._capacity = int(cpu._alloc[1]), int(cpu._alloc[2])
        self.sketch_counts = (
            torch.from_numpy(cpu.sketch.counts.astype(np.int32)).to(dev) if cpu.sketch is not None else None
        )
        self.sketch_seed = cpu.sketch.seed if cpu.sketch is not None else np.uint64(0)
        self._evicted: list[torch.Tensor] = (
            [torch.from_numpy(np.concatenate(cpu._evicted)).to(dev)] if cpu._evicted else []
        )
        self.default = torch.zeros(self.dim, dtype=torch.float32, device=dev)
        # The allocator on the device (see "settling" in the module docstring).
        self._ctr = torch.zeros(_kernels().N_COUNTERS, dtype=torch.int64, device=dev)
        self._pending = 0  # upper bound on the rows taken since the last settle
        self._unsettled = False
        self._calls = False  # a call ran since the per-call counters were zeroed
        self._fail_ids = torch.empty(0, dtype=torch.int64, device=dev)
        self._fail_rows = torch.empty(0, dtype=torch.int32, device=dev)
        self._bufs: tuple[torch.Tensor, ...] = ()
        self._no_free = torch.zeros(1, dtype=torch.int32, device=dev)
        self._views()

    def _views(self) -> None:
        a = self.launch.arr
        self._state = {k: self._state_all[i] for i, k in enumerate(self._state_names)}
        self._w = a(self._weights)
        if self._state_names:
            self._st, self._st_init = a(self._state_all), a(self._state_init)
        else:  # no optimizer state (SGD): 1-entry stand-ins, never written (n_state = 0)
            self._st = a(torch.zeros((1, 1, 1), dtype=torch.float32, device=self.device))
            self._st_init = a(torch.zeros(1, dtype=torch.float32, device=self.device))
        self._s = {k: a(v) for k, v in self._state.items()}
        self._lu = a(self._last_update)
        self._d = a(self._dirty)
        counts = self.sketch_counts if self.sketch_counts is not None else torch.zeros((1, 1), dtype=torch.int32)
        self._sk_t = counts.to(self.device).view(-1)
        self._sk = a(self._sk_t)
        self._sk_width = counts.shape[1]

    # -- settling: the host's view of the device allocator ---------------------------------------
    def _settled(self, counters: np.ndarray) -> None:
        """Take in ``counters`` (a host copy of ``_ctr[:3]``): rows taken, failed walks, ids not
        admitted since the last settle. Failed walks are placed now (growing the index)."""
        taken, failed, unadmitted = (int(x) for x in counters[:3])
        self._unsettled, self._pending = False, 0
        if taken:
            free = self._free.numel()
            used_free = min(taken, free)
            self._free = self._free[: free - used_free]
            self._high_water += taken - used_free
            self.index.size += taken
            self._stats.admitted += taken
        self._stats.unadmitted_lookups += unadmitted
        self._calls = False
        if failed:
            self.index.grow(homeless=(self._fail_ids[:failed].clone(), self._fail_rows[:failed].clone()))

    def settle(self) -> None:
        """Bring the host's counters (rows used, ids held, stats) up to date: one device read,
        only when a training call ran since the last settle."""
        settle_tables([self])

    def _prepare(self, n: int) -> None:
        """Before a find-or-insert of at most ``n`` new ids: enough rows, index room below
        ``PREGROW_LOAD`` and buffers for the worst case, judged from the host's upper bound; only
        when the bound says growth might be needed does it settle first (one read) and grow on the
        exact counts."""
        bound = self._pending + n
        # Failed walks since the settle (at most ``bound``) wait in fail_*: grown by a copy while
        # unsettled, up to a limit past which the table settles instead (failures are rare; the
        # buffer need not hold the worst case of many calls).
        fail_limit = max(4 * n, self._capacity // 8)

        def short() -> bool:
            rows_needed = self._high_water + max(0, bound - self._free.numel())
            index_full = self.index.size + bound > PREGROW_LOAD * self.index.positions
            return rows_needed > self._capacity or index_full or bound > max(fail_limit, self._fail_ids.numel())

        if short() and self._unsettled:
            self.settle()
            bound = n
        if short():
            self._ensure_rows(self._high_water + max(0, bound - self._free.numel()))
            self.index.reserve(bound)
        if bound > self._fail_ids.numel():
            size = max(bound, min(fail_limit, 2 * self._fail_ids.numel()))
            grown = torch.empty(size - self._fail_ids.numel(), dtype=torch.int64, device=self.device)
            self._fail_ids = torch.cat([self._fail_ids, grown])
            self._fail_rows = torch.cat([self._fail_rows, grown.to(torch.int32)])
        if len(self._bufs) == 0 or self._bufs[0].numel() < n:
            dev = self.device
            self._bufs = (
                torch.empty(n, dtype=torch.int64, device=dev), torch.empty(n, dtype=torch.int32, device=dev),
                torch.empty(n, dtype=torch.int64, device=dev), torch.empty(n, dtype=torch.int32, device=dev),
            )  # fmt: skip
        self._pending = bound
        self._unsettled = True

    # -- sizes ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        self.settle()
        return self.index.size

    @property
    def stats(self) -> TableStats:
        self.settle()
        return self._stats

    @property
    def row_capacity(self) -> int:
        return self._capacity

    @property
    def weight(self) -> torch.Tensor:
        """All rows as a device tensor (rows beyond ``len`` are unused)."""
        return self._weights

    def memory(self) -> dict[str, int]:
        rows = self.row_capacity
        return {
            "ids": len(self),
            "vector_bytes": rows * self.dim * 4,
            "optimizer_bytes": rows * self.dim * 4 * len(self._state),
            "index_bytes": self.index.nbytes,
            "row_metadata_bytes": self._last_update.numel() * 4 + self._dirty.numel() + self._free.numel() * 4,
            "sketch_bytes": self.sketch_counts.numel() if self.sketch_counts is not None else 0,
        }

    # -- ids in --------------------------------------------------------------------------------
    def device_ids(self, ids: object, field: str = "ids") -> torch.Tensor:
        """``ids`` as a 1-D int64 tensor on this table's device; bad input raises naming ``field``."""
        if isinstance(ids, torch.Tensor):
            if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise InvalidInputError(field, f"tensor of {ids.dtype}", "ids must be an integer tensor (int64)")
            if ids.dim() != 1:
                raise InvalidInputError(field, f"shape {tuple(ids.shape)}", "ids must be 1-D")
            return ids.to(self.device, torch.int64).contiguous()
        from streamrec.embedding.table import as_ids

        return torch.from_numpy(as_ids(ids, field)).to(self.device)

    # -- the training path ---------------------------------------------------------------------
    def admit_distinct(self, ids: object, now: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(row of each distinct id or -1, index of each occurrence's distinct id): the training
        lookup of a batch, on the device, without a host sync. Admission counts every occurrence.

        The first tensor has one entry per *occurrence* (a fixed size: the distinct count stays on
        the device): entry ``d`` is the row of the ``d``-th smallest distinct id, -1 for an id not
        admitted yet and for every entry past the distinct count."""
        ids = self.device_ids(ids)
        t = int(check_time(now))
        n = ids.shape[0]
        if n == 0:
            return torch.empty(0, dtype=torch.int32, device=self.device), torch.empty(0, dtype=torch.int64,
                                                                                     device=self.device)  # fmt: skip
        sorted_ids, order = torch.sort(ids)
        dpos = first_occurrence_index(sorted_ids.unsqueeze(0))[0]
        inverse = torch.empty_like(dpos).scatter_(0, order, dpos)
        out = torch.empty(n, dtype=torch.int32, device=self.device)
        self.find_or_insert_sorted(sorted_ids, dpos, out, t)
        return out, inverse

    def find_or_insert_sorted(self, sorted_ids: torch.Tensor, dpos: torch.Tensor, out: torch.Tensor, now: int) -> None:
        """Find-or-insert of a sorted batch (``dpos``: distinct index of each position, see
        :func:`first_occurrence_index`) into ``out`` (int32, the batch's size): two launches
        (find-or-insert; the new rows' init with the spilled ids' walk), each over the batch size
        with the device's counts deciding which threads work; no host sync."""
        n = sorted_ids.shape[0]
        self._prepare(n)
        ix, a, K = self.index, self.launch.arr, _kernels()
        new_ids, new_rows, spill_ids, spill_rows = (a(b) for b in self._bufs)
        free = self._free if self._free.numel() else self._no_free
        ctr = a(self._ctr)
        if self._calls:  # zero after a settle already
            self._ctr[K.C_NEW : K.C_SPILL + 1].zero_()
        self._calls = True
        self.launch(
            K.find_admit_sorted, n, ix.k, ix.r, ix.n_buckets, ix.seed1, ix.seed2,
            a(sorted_ids), a(dpos), a(out),
            self._lu, self._d, np.int64(now),
            self._sk, self._sk_width, self.sketch_seed, self.config.admit_after,
            a(free), self._free.numel(), self._high_water,
            ctr, new_ids, new_rows, spill_ids, spill_rows, a(self._fail_ids), a(self._fail_rows),
        )  # fmt: skip
        kind, lo, hi = self._init
        self.launch(
            K.place_new, n * self.dim, ix.k, ix.r, ix.n_buckets, ix.seed1, ix.seed2, a(ix._locks),
            spill_ids, spill_rows, ix.walk_seed(), K.MAX_KICKS, a(self._fail_ids), a(self._fail_rows),
            self._w, self._st, self._st_init, len(self._state_names), new_ids, new_rows, ctr,
            kind, float(lo), float(hi), self.seed,
        )  # fmt: skip

    def gather_rows(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        """``out[k] = weight[rows[k]]`` (the default vector where ``rows[k] < 0``): one launch."""
        a = self.launch.arr
        self.launch(_kernels().gather_leaf, rows.shape[0] * self.dim, self._w, a(self.default), a(rows), a(out))

    def admit(self, ids: object, now: float) -> np.ndarray:
        """Rows of ``ids`` for a training step, as :meth:`EmbeddingTable.admit` (host int32)."""
        rows, inverse = self.admit_distinct(ids, now)
        return rows[inverse].cpu().numpy() if rows.numel() else np.empty(0, dtype=np.int32)

    def _ensure_rows(self, needed: int, exact: bool = False) -> None:
        if needed <= self._capacity:
            return
        self.settle()
        capacity = needed if exact else max(needed, int(self._capacity * 1.5) + 16)
        if capacity > 2**31 - 1:
            raise MemoryError(f"slot {self.slot}: more than 2**31 rows")
        used = self._high_water

        def grown(t: torch.Tensor, fill: float | torch.Tensor = 0, axis: int = 0) -> torch.Tensor:
            shape = list(t.shape)
            shape[axis] = capacity
            new = torch.empty(shape, dtype=t.dtype, device=self.device)
            if axis == 0:
                new.fill_(fill)
                new[:used] = t[:used]
            else:
                new.copy_(fill.view(-1, 1, 1).expand_as(new))
                new[:, :used] = t[:, :used]
            return new

        self._weights = grown(self._weights)
        if self._state_names:
            self._state_all = grown(self._state_all, self._state_init, axis=1)
        self._last_update = grown(self._last_update)
        self._dirty = grown(self._dirty)
        self._capacity = capacity
        self._views()

    def apply_gradients(
        self, rows: torch.Tensor, grads: torch.Tensor, *, distinct: bool = True, checked: bool = False
    ) -> None:
        """One fused optimizer step on ``rows`` with per-row ``grads`` (device tensors).

        ``distinct=False`` sums the gradients of repeated rows first (on the device). Checks come
        first: a bad shape or a NaN/inf gradient raises and changes nothing (``checked=True``: the
        caller ran :meth:`check_gradients` on these very tensors, as the module does).
        """
        if not checked:
            self.check_gradients(rows, grads)
        if rows.numel() == 0:
            return
        rows = rows.to(self.device)
        grads = grads.to(self.device, torch.float32)
        if not distinct:
            rows, inverse = torch.unique(rows, return_inverse=True)
            grads = torch.zeros((rows.numel(), self.dim), device=self.device).index_add_(0, inverse, grads)
        self.update_rows(rows.contiguous(), grads.contiguous())

    def update_rows(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """The fused optimizer kernel, one launch: ``rows`` distinct (int32 or int64; entries < 0
        skipped), ``grads`` [len(rows), dim] float32 and already checked; marks rows dirty."""
        self.step += 1
        c, a, K, n = self.config.optimizer, self.launch.arr, _kernels(), rows.numel() * self.dim
        r, g, d, f32 = a(rows), a(grads), self._d, np.float32
        if isinstance(c, SGD):
            self.launch(K.sgd_rows, n, self._w, r, g, d, f32(c.lr))
        elif isinstance(c, Adagrad):
            clr = c.lr / (1 + (self.step - 1) * c.lr_decay)
            self.launch(K.adagrad_rows, n, self._w, self._s["sum"], r, g, d, f32(clr), f32(c.eps))
        elif isinstance(c, Adam):
            step_size = c.lr * math.sqrt(1 - c.beta2**self.step) / (1 - c.beta1**self.step)
            self.launch(K.adam_rows, n, self._w, self._s["exp_avg"], self._s["exp_avg_sq"], r, g, d,
                        f32(1 - c.beta1), f32(1 - c.beta2), f32(step_size), f32(c.eps))  # fmt: skip
        elif isinstance(c, FTRL):
            self.launch(K.ftrl_rows, n, self._w, self._s["z"], self._s["n"], r, g, d, f32(c.alpha), f32(c.beta),
                        f32(c.l1), f32(c.l2))  # fmt: skip
        else:  # pragma: no cover - config validation admits these four only
            raise TypeError(f"unknown optimizer config {c!r}")

    def check_gradients(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """Raise :class:`InvalidInputError` (or ``NonFiniteGradientError``) for a bad update."""
        if not isinstance(rows, torch.Tensor) or rows.dtype != torch.int64 or rows.dim() != 1:
            raise InvalidInputError(f"{self.slot}.rows", rows, "rows must be a 1-D int64 tensor")
        if not isinstance(grads, torch.Tensor) or not grads.is_floating_point():
            raise InvalidInputError(f"{self.slot}.grads", type(grads).__name__, "gradient must be a float tensor")
        if tuple(grads.shape) != (rows.numel(), self.dim):
            raise InvalidInputError(
                f"{self.slot}.grads", tuple(grads.shape), f"gradient must have shape ({rows.numel()}, {self.dim})"
            )
        if rows.numel() == 0:
            return
        self.settle()
        lo, hi, finite = device_read(
            torch.stack(
                [
                    rows.min().to(torch.float64),
                    rows.max().to(torch.float64),
                    torch.isfinite(grads).all().to(torch.float64),
                ]
            )
        ).tolist()
        if lo < 0 or hi >= self._high_water:
            raise InvalidInputError(f"{self.slot}.rows", rows.cpu(), "rows must be rows of this table")
        if not finite:
            raise_non_finite(self.slot, grads)

    # -- the read path -------------------------------------------------------------------------
    def lookup_tensor(self, ids: object) -> torch.Tensor:
        """Vectors of ``ids`` as a device tensor (default vector where absent): one kernel."""
        self.settle()
        return self.index.gather(self.device_ids(ids), self._weights, self.default)

    def lookup(self, ids: object) -> np.ndarray:
        """Vectors of ``ids`` (host float32 [n, dim]); absent ids get the default vector."""
        return self.lookup_tensor(ids).cpu().numpy()

    def rows_of(self, ids: object) -> np.ndarray:
        """Rows of ``ids`` without admitting or touching them (-1 = absent), host int32."""
        self.settle()
        return self.index.lookup(self.device_ids(ids)).cpu().numpy()

    # -- expiry, delete, export ----------------------------------------------------------------
    def evict_expired(self, now: float) -> int:
        """Remove rows idle for longer than the TTL at event time ``now`` (one sweep kernel)."""
        t = int(check_time(now))
        self.settle()
        if self.config.ttl is None:
            return 0
        cutoff = t - int(self.config.ttl)
        if cutoff <= 0 or len(self) == 0:
            return 0
        ix = self.index
        tickets = torch.zeros(1, dtype=torch.int64, device=self.device)
        positions = torch.empty(len(self), dtype=torch.int64, device=self.device)
        rows = torch.empty(len(self), dtype=torch.int32, device=self.device)
        a = self.launch.arr
        self.launch(_kernels().evict_older, ix.positions, ix.k, ix.r, self._lu, np.int64(cutoff), a(tickets),
                    a(positions), a(rows))  # fmt: skip
        n = int(tickets[0])
        if n:
            ix.size -= n
            order = torch.argsort(positions[:n])
            ids = ix.buckets[positions[:n][order]]
            freed = rows[:n][order]
            self._release(ids, freed)
        return n

    def delete(self, ids: object) -> int:
        """Remove ``ids`` now (absent ones ignored): rows freed, ids reported as evicted."""
        self.settle()
        freed, freed_ids = self.index.delete(self.device_ids(ids))
        if freed.numel():
            self._release(freed_ids, freed)
        return int(freed.numel())

    def _release(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        self._dirty[rows.to(torch.int64)] = 0
        self._free = torch.cat([self._free, rows])
        self._evicted.append(ids)
        self._stats.evicted += ids.numel()
        if self.sketch_counts is not None:
            a = self.launch.arr
            self.launch(_kernels().forget_many, ids.numel() * self.sketch_counts.shape[0], self._sk, self._sk_width,
                        self.sketch_seed, a(ids.contiguous()), self.config.admit_after)  # fmt: skip

    def export_delta(self) -> TableDelta:
        """Ids and vectors changed, and ids evicted, since the previous export (one sweep kernel)."""
        self.settle()
        ix = self.index
        tickets = torch.zeros(1, dtype=torch.int64, device=self.device)
        positions = torch.empty(max(1, len(self)), dtype=torch.int64, device=self.device)
        a = self.launch.arr
        self.launch(_kernels().collect_dirty, ix.positions, ix.k, ix.r, self._d, a(tickets), a(positions))
        n = int(tickets[0])
        ids, rows = ix.positions_to_items(positions[:n])
        vectors = self._weights[rows.to(torch.int64)]
        evicted = torch.cat(self._evicted).cpu().numpy() if self._evicted else np.empty(0, dtype=np.int64)
        self._evicted = []
        return TableDelta(self.slot, ids.cpu().numpy(), vectors.cpu().numpy(), evicted)

    def export_full(self) -> TableDelta:
        self.settle()
        ids, rows = self.index.items()
        return TableDelta(
            self.slot, ids.cpu().numpy(), self._weights[rows.to(torch.int64)].cpu().numpy(), np.empty(0, np.int64)
        )

    # -- transfer and snapshots ----------------------------------------------------------------
    def to_cpu(self) -> EmbeddingTable:
        """The same table in host memory (an :class:`EmbeddingTable`), bytes for bytes."""
        table = EmbeddingTable.from_state_arrays(self.slot, self.config, 0, self.state_arrays())
        table.seed = self.seed  # the table's own seed (the collection seed is not kept per table)
        if table.sketch is not None:
            table.sketch.seed = self.sketch_seed
        return table

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The CPU table's snapshot arrays (``EmbeddingTable.state_arrays``), copied to the host."""
        self.settle()
        used = self._high_water
        stats = self.stats
        arrays = {f"index.{k}": v for k, v in self.index.state().items()}
        free = self._free.cpu().numpy()
        arrays.update(
            {
                "weights": self._weights[:used].cpu().numpy(),
                "last_update": self._last_update[:used].cpu().numpy().astype(np.uint32),
                "dirty": self._dirty[:used].cpu().numpy(),
                "free": free,
                "alloc": np.array([free.shape[0], used, self._capacity, self.index.size], dtype=np.int64),
                "counters": np.array([self.step, *astuple(stats)], np.int64),
                "evicted": torch.cat(self._evicted).cpu().numpy() if self._evicted else np.empty(0, dtype=np.int64),
            }
        )
        arrays.update({f"state.{k}": v[:used].cpu().numpy() for k, v in self._state.items()})
        if self.sketch_counts is not None:
            arrays["sketch"] = self.sketch_counts.cpu().numpy().astype(np.uint8)
        return arrays

    @classmethod
    def from_state_arrays(
        cls, slot: str, config: SlotConfig, seed: int, arrays: dict[str, np.ndarray], device: str = "cuda"
    ) -> CudaEmbeddingTable:
        return cls.from_cpu(EmbeddingTable.from_state_arrays(slot, config, seed, arrays), device)


def first_occurrence_index(sorted_ids: torch.Tensor) -> torch.Tensor:
    """For ``[S, B]`` ids sorted along each row: the distinct index of every position (int64,
    ``[S, B]``; 0 at the first id, +1 at each new one). Fixed-size, no host sync: the distinct
    count of row ``s`` is ``out[s, -1] + 1`` and stays on the device."""
    out = torch.zeros(sorted_ids.shape, dtype=torch.int64, device=sorted_ids.device)
    if sorted_ids.shape[1] > 1:
        torch.cumsum(sorted_ids[:, 1:] != sorted_ids[:, :-1], dim=1, out=out[:, 1:])
    return out


def settle_tables(tables: Sequence[CudaEmbeddingTable], extra: torch.Tensor | None = None) -> np.ndarray | None:
    """Settle every table that ran a training call since its last settle, with ``extra`` (any
    small tensor on the same device, e.g. per-slot gradient flags) read along: one device read in
    all. Returns ``extra``'s host values (int64)."""
    pending = [t for t in tables if t._unsettled]
    if not pending and extra is None:
        return None
    parts = [t._ctr[:3] for t in pending]
    if extra is not None:
        parts.append(extra.reshape(-1).to(torch.int64))
    host = device_read(torch.cat(parts)).numpy()
    torch._foreach_zero_([t._ctr for t in pending])  # one launch for all (stream-ordered after the read)
    for i, table in enumerate(pending):
        table._settled(host[3 * i : 3 * i + 3])
    return host[3 * len(pending) :] if extra is not None else None


def raise_non_finite(slot: str, grads: torch.Tensor) -> None:
    """Raise :class:`NonFiniteGradientError` for ``slot`` naming the first gradient row with a NaN/inf."""
    bad = int((~torch.isfinite(grads)).any(dim=1).nonzero()[0, 0])
    raise NonFiniteGradientError(
        f"{slot}.grads", grads[bad].tolist(), "gradient holds NaN or infinity; nothing was updated"
    )


def make_table(slot: str, config: SlotConfig, seed: int, device: str) -> EmbeddingTable | CudaEmbeddingTable:
    """The table of one slot on ``device`` (``"cpu"`` -> :class:`EmbeddingTable`)."""
    if check_device(device) == "cpu":
        return EmbeddingTable(slot, config, seed)
    return CudaEmbeddingTable(slot, config, seed, device)
