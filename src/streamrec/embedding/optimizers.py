"""Row-wise optimizers: update only the rows a batch touched, with per-row state.

Each optimizer reads the touched rows and their state with ``index_select``, applies the same
arithmetic, in the same order, as the PyTorch optimizer it mirrors on a sparse gradient, and
writes the rows back with ``index_copy_``. Gradients arrive already summed per row (duplicate ids
in a batch add up), so the result equals the dense reference on an ``nn.Embedding`` of the same
rows to float tolerance:

=========  =============================================  ===========================
optimizer  state per row (float32, ``dim`` each)          reference
=========  =============================================  ===========================
sgd        none                                           ``torch.optim.SGD``
adagrad    ``sum`` (squared-gradient accumulator)         ``torch.optim.Adagrad``
adam       ``exp_avg``, ``exp_avg_sq``; table-wide step    ``torch.optim.SparseAdam``
ftrl       ``z``, ``n``                                   FTRL-Proximal (McMahan 2013)
=========  =============================================  ===========================

The table-wide ``step`` counts calls to :meth:`RowOptimizer.apply` (as PyTorch counts steps per
parameter); Adam's bias correction and Adagrad's ``lr_decay`` use it.
"""

from __future__ import annotations

import math

import torch

from streamrec.embedding.config import FTRL, SGD, Adagrad, Adam, OptimizerConfig


class RowOptimizer:
    """Base: ``state_names`` lists the per-row state tensors the table must allocate."""

    state_names: tuple[str, ...] = ()

    def initial_state(self, name: str) -> float:
        return 0.0

    def apply(
        self,
        weights: torch.Tensor,
        state: dict[str, torch.Tensor],
        rows: torch.Tensor,
        grad: torch.Tensor,
        step: int,
    ) -> None:
        raise NotImplementedError


class SGDRows(RowOptimizer):
    def __init__(self, config: SGD) -> None:
        self.lr = config.lr

    def apply(self, weights, state, rows, grad, step):
        w = weights.index_select(0, rows)
        w.add_(grad, alpha=-self.lr)
        weights.index_copy_(0, rows, w)


class AdagradRows(RowOptimizer):
    state_names = ("sum",)

    def __init__(self, config: Adagrad) -> None:
        self.config = config

    def initial_state(self, name: str) -> float:
        return self.config.initial_accumulator_value

    def apply(self, weights, state, rows, grad, step):
        c = self.config
        clr = c.lr / (1 + (step - 1) * c.lr_decay)
        acc = state["sum"].index_select(0, rows)
        acc.addcmul_(grad, grad, value=1)
        state["sum"].index_copy_(0, rows, acc)
        std = acc.sqrt_().add_(c.eps)
        w = weights.index_select(0, rows)
        w.addcdiv_(grad, std, value=-clr)
        weights.index_copy_(0, rows, w)


class AdamRows(RowOptimizer):
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, config: Adam) -> None:
        self.config = config

    def apply(self, weights, state, rows, grad, step):
        c = self.config
        m_old = state["exp_avg"].index_select(0, rows)
        v_old = state["exp_avg_sq"].index_select(0, rows)
        m_update = grad.sub(m_old).mul_(1 - c.beta1)
        v_update = grad.pow(2).sub_(v_old).mul_(1 - c.beta2)
        state["exp_avg"].index_copy_(0, rows, m_old + m_update)
        state["exp_avg_sq"].index_copy_(0, rows, v_old + v_update)
        numer = m_update.add_(m_old)
        denom = v_update.add_(v_old).sqrt_().add_(c.eps)
        step_size = c.lr * math.sqrt(1 - c.beta2**step) / (1 - c.beta1**step)
        w = weights.index_select(0, rows)
        w.add_(-step_size * numer.div_(denom))
        weights.index_copy_(0, rows, w)


class FTRLRows(RowOptimizer):
    """FTRL-Proximal. The weight is a function of (z, n); a row's initial vector is absorbed into z
    on its first update (``z -= sigma * w`` with ``w`` the current weight), as in the paper."""

    state_names = ("z", "n")

    def __init__(self, config: FTRL) -> None:
        self.config = config

    def apply(self, weights, state, rows, grad, step):
        c = self.config
        w = weights.index_select(0, rows)
        z = state["z"].index_select(0, rows)
        n = state["n"].index_select(0, rows)
        n_new = n + grad * grad
        sigma = (n_new.sqrt() - n.sqrt()) / c.alpha
        z.add_(grad - sigma * w)
        shrunk = z - torch.sign(z) * c.l1
        w_new = -shrunk / ((c.beta + n_new.sqrt()) / c.alpha + c.l2)
        w_new = torch.where(z.abs() <= c.l1, torch.zeros_like(w_new), w_new)
        state["z"].index_copy_(0, rows, z)
        state["n"].index_copy_(0, rows, n_new)
        weights.index_copy_(0, rows, w_new)


def make_optimizer(config: OptimizerConfig) -> RowOptimizer:
    """The row optimizer for a slot's optimizer config."""
    if isinstance(config, SGD):
        return SGDRows(config)
    if isinstance(config, Adagrad):
        return AdagradRows(config)
    if isinstance(config, Adam):
        return AdamRows(config)
    if isinstance(config, FTRL):
        return FTRLRows(config)
    raise TypeError(f"unknown optimizer config {config!r}")
