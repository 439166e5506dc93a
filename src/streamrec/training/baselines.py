"""The baselines of ``streamrec bench training``: the same trainer on modulo-hashed ``EmbeddingBag`` tables.

:func:`modulo_trainer` is the training loop most PyTorch recommenders run (DLRM's reference model,
TorchRec's ``EmbeddingBagCollection`` on one process): per slot an ``nn.EmbeddingBag`` indexed by
``id % rows`` (:func:`~streamrec.models.build_hashed_model`), trained by sparse
``torch.optim.Adagrad``. It is sized generously, one row per distinct id of the bench's data, so
collisions are those of hashing alone, not of a table too small. It is a fair comparison because
everything else is streamrec's own: the same DeepFM head ([64, 32]), the same
:class:`~streamrec.training.Trainer` (batch size, dense optimizer, loss), the same examples and, in
the online phase, the same log and consumer; only the embedding source differs. The ratio is what
the collisionless tables (and their syncs to serving, which the baseline cannot make) cost or buy.

:func:`torchrec_baseline` says why the ranks phase has no TorchRec contender on this machine.
"""

from __future__ import annotations

import numpy as np
import torch

from streamrec.batch import ExampleBatch

__all__ = ["TORCHREC_CHECK", "modulo_trainer", "torchrec_baseline"]


def modulo_trainer(data: ExampleBatch, dim: int, batch_size: int, seed: int = 0):
    """A :class:`~streamrec.training.Trainer` of DeepFM [64, 32] on ``EmbeddingBag`` tables of ``dim``,
    one per slot of ``data`` with one row per distinct id there, ids taken modulo rows (Adagrad 0.05)."""
    from streamrec.models import ModelConfig, build_hashed_model
    from streamrec.training.trainer import TrainConfig, Trainer

    slots = list(data.sparse)
    config = ModelConfig(kind="deepfm", hidden=[64, 32], n_dense=data.n_dense)
    train = TrainConfig(batch_size=batch_size, hashed_sparse_lr=0.05, seed=seed)
    rows = {s: max(1, len(np.unique(data.sparse[s].values.numpy()))) for s in slots}
    torch.manual_seed(seed)
    return Trainer(build_hashed_model(config, dict.fromkeys(slots, dim), rows, {}), train)


#: What installing TorchRec next to this build's torch gave when the ranks phase was written (the
#: bench cannot run pip); printed with the import error when ``torchrec`` is absent.
TORCHREC_CHECK = (
    "pip installs torchrec 1.9.2 and fbgemm-gpu-cpu 1.9.0 (the newest on PyPI) next to torch 2.13.0 "
    "(torchrec with --no-deps: it requires fbgemm-gpu, the CUDA build), but `import fbgemm_gpu` fails: "
    "OSError: Could not load this library: .../fbgemm_gpu/fbgemm_gpu_tbe_index_select.so "
    "(undefined symbol torch::autograd::_wrap_outputs: built against another torch's ABI)"
)


def torchrec_baseline() -> dict:
    """TorchRec's row-wise sharded ``EmbeddingBagCollection`` on gloo, where it installs; else why not."""
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec
    except Exception as exc:  # ImportError, or OSError from a library built for another torch
        return {"ran": False, "reason": f"{type(exc).__name__}: {exc}; {TORCHREC_CHECK}"}
    return {
        "ran": False,
        "reason": f"torchrec {getattr(torchrec, '__version__', '?')} imports here, but this bench has no TorchRec "
        f"contender yet: when it was written, {TORCHREC_CHECK}",
    }
