"""SOAP: ShampoO with Adam in the Preconditioner's eigenbasis (Vyas et al. 2024, arXiv 2409.11321).

Shampoo preconditions a matrix gradient G (m x n) with two Kronecker factors,
L ~ E[G G^T] (m x m) and R ~ E[G^T G] (n x n). SOAP keeps those factors but,
instead of taking their inverse roots, runs Adam in their eigenbasis: rotate
the gradient into the basis, do Adam there, rotate the step back.

For one parameter, with Q_L, Q_R the eigenvectors of L and R (columns sorted
by decreasing eigenvalue) and t the number of steps that moved it:

    first step:  L = (1 - b_sh) G G^T,  R = (1 - b_sh) G^T G,
                 Q_L, Q_R = eigh(L), eigh(R)            the parameter does not move
    every later step:
        g~ = Q_L^T G Q_R                                 gradient in the eigenbasis
        t  = t + 1
        m  = b1 m + (1 - b1) g~                          m lives in the eigenbasis
        v  = b2 v + (1 - b2) g~^2
        N  = Q_L (m / (sqrt(v) + eps)) Q_R^T             Adam's direction, rotated back
        N  = N / (1e-30 + rms(N))                        only if normalize_grads
        W  = W - lr sqrt(1 - b2^t) / (1 - b1^t) N        (lr alone if not correct_bias)
        W  = W - lr wd W                                 decoupled decay, after the step
        L  = b_sh L + (1 - b_sh) G G^T,  R likewise      (after the step: G never
                                                          rotates itself)
        every precondition_frequency-th t: refresh the bases (below)

Refreshing a basis Q of a factor F (one step of subspace iteration): order
Q's columns by their Rayleigh quotients diag(Q^T F Q), largest first, permute
v's entries along that dimension the same way (they belong to the columns),
then Q = orth(F Q) by a QR decomposition. Across a refresh m is rotated out
of the old basis and into the new one, so it keeps meaning the same vector.

Tensors of any order work mode by mode: every dimension k of size at most
max_precond_dim gets its own factor F_k = contraction of G with itself over
all the other dimensions, and rotating means multiplying dimension k by Q_k^T
(into the basis) or Q_k (back). A dimension larger than max_precond_dim (a
vocabulary, say) gets no factor: along it the basis is the identity. A
1-D tensor gets a factor only with precondition_1d; otherwise it is plain
Adam (with SOAP's bias correction and decay). merge_dims first reshapes the
tensor: consecutive dimensions are multiplied together while the product
stays within max_precond_dim (a conv weight (out, in, kh, kw) usually becomes
(out, in*kh*kw)); with data_format "channels_last" a 4-D tensor is taken as
(out, kh, kw, in) and permuted to (out, in, kh, kw) first. data_format has no
effect without merge_dims.

Constants:
    b_sh = shampoo_beta if shampoo_beta >= 0 else b2 (the EMA coefficient of
        the factors; upstream's default -1 means "use b2").
    1e-30 I is added to a factor before its first eigh (upstream's guard; it
        changes nothing unless the factor is zero, e.g. a zero gradient).
    1e-30 in the normalize_grads division keeps a zero direction finite.
    eps (1e-8) is Adam's epsilon, added to sqrt(v) (not under the root).
The first step skips the update so that the step's own gradient is never
rotated by a basis built from it; eigh runs only at that step, later bases
come from the cheaper QR refresh.

Written from nikhilvyas/SOAP @ a1e5535 `soap.py` (the paper's official code);
see the SOAP class for where this one differs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from discovered._contract import (
    CheckedOptimizer,
    call_closure,
    check_betas,
    check_choice,
    check_lr,
    check_nonnegative,
    check_positive_int,
    params_with_grad,
)

DATA_FORMATS = ("channels_first", "channels_last")


class SOAP(CheckedOptimizer):
    """SOAP(params, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
    precondition_frequency=10, max_precond_dim=10000, merge_dims=False, precondition_1d=False,
    normalize_grads=False, data_format="channels_first", correct_bias=True).

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: (b1, b2): Adam's EMA coefficients of m and v (in the eigenbasis).
        shampoo_beta: EMA coefficient of the Kronecker factors; any negative
            value means b2.
        eps: Adam's epsilon (added to sqrt(v)).
        weight_decay: decoupled decay, applied after the step: W -= lr * wd * W.
        precondition_frequency: the eigenbases are refreshed (one power
            iteration + QR) every this many moving steps.
        max_precond_dim: a dimension larger than this gets no factor (its
            basis stays the identity); also the bound for merge_dims.
        merge_dims: merge consecutive dimensions while their product is at most
            max_precond_dim, and precondition the merged tensor.
        precondition_1d: give 1-D parameters (biases, gains) a factor too
            (otherwise they get Adam).
        normalize_grads: divide the rotated-back direction by its RMS.
        data_format: "channels_first" (a conv weight is (out, in, kh, kw)) or
            "channels_last" ((out, kh, kw, in)); only used with merge_dims.
        correct_bias: Adam's bias correction sqrt(1 - b2^t) / (1 - b1^t), with
            t counting the steps that moved the parameter.

    The first step a parameter takes only builds its preconditioner; it moves
    from the second step on (and so does weight decay).

    State per parameter: step (moving steps so far), exp_avg and exp_avg_sq
    (m and v, in the eigenbasis, shaped like the merged tensor when
    merge_dims reshapes it), GG (the factor of each dimension, None where a
    dimension has none) and Q (their eigenbases, None likewise). State
    tensors have the parameter's dtype; eigh and QR run in float32 at least.

    Differences from nikhilvyas/SOAP @ a1e5535 (soap.py):
      - The closure runs with grad enabled (upstream calls it under
        torch.no_grad, nikhilvyas/SOAP#7).
      - m is rotated out of the old basis and into the new one only when
        a refresh changes the basis; upstream rotates it out and back in at
        every step (update_preconditioner), which is the identity up to
        round-off and costs four of its ten matrix products a step.
      - float64 parameters keep float64 factors and decompose them in float64;
        upstream makes its factors in torch's default dtype (its step fails on
        a parameter of any other dtype) and runs QR (and eigh, for a factor
        that is not float32) in float32. bfloat16/float16 parameters work here
        (state in their dtype, decompositions in float32); upstream raises.
      - shampoo_beta and precondition_frequency are read from the param group
        at every step (upstream freezes them into the state at the first step),
        and data_format is a per-group hyperparameter saved in state_dict
        (upstream keeps it on the optimizer object).
      - Hyperparameters are checked (torch-style ValueError); sparse and
        complex gradients are refused. A bad data_format is refused up front
        (upstream asserts on it only once it merges dimensions), and
        max_precond_dim must be at least 1 (upstream takes 0: no factors).
    SOAP mixes entries along every preconditioned dimension, so a stack of
    seeds along a leading dimension is not trained as the seeds alone.
    """

    def __init__(
        self,
        params,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float = -1,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        data_format: str = "channels_first",
        correct_bias: bool = True,
    ):
        defaults = {
            "lr": lr,
            "betas": betas,
            "shampoo_beta": shampoo_beta,
            "eps": eps,
            "weight_decay": weight_decay,
            "precondition_frequency": precondition_frequency,
            "max_precond_dim": max_precond_dim,
            "merge_dims": merge_dims,
            "precondition_1d": precondition_1d,
            "normalize_grads": normalize_grads,
            "data_format": data_format,
            "correct_bias": correct_bias,
        }
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        check_lr(group["lr"])
        check_betas(group["betas"])
        shampoo_beta = group["shampoo_beta"]
        if not (isinstance(shampoo_beta, (int, float)) and not isinstance(shampoo_beta, bool) and shampoo_beta < 1.0):
            raise ValueError(
                f"Invalid shampoo_beta value: {shampoo_beta} (expected shampoo_beta < 1; negative means beta2)"
            )
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_positive_int("precondition_frequency", group["precondition_frequency"])
        check_positive_int("max_precond_dim", group["max_precond_dim"])
        for flag in ("merge_dims", "precondition_1d", "normalize_grads", "correct_bias"):
            if not isinstance(group[flag], bool):
                raise ValueError(f"Invalid {flag} value: {group[flag]!r} (expected a bool)")
        check_choice("data_format", group["data_format"], DATA_FORMATS)

    @torch.no_grad()
    def step(self, closure=None):
        loss = call_closure(closure)
        for group in self.param_groups:
            for p in params_with_grad(group, "SOAP"):
                self._step_param(p, group)
        return loss

    def _step_param(self, p: Tensor, group: dict) -> None:
        state = self.state[p]
        beta1, beta2 = group["betas"]
        shampoo_beta = group["shampoo_beta"] if group["shampoo_beta"] >= 0 else beta2
        layout = _Layout(p, group)
        grad = layout.view(p.grad)

        if "Q" not in state:
            # First step: build the factors and their eigenbases, do not move.
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
            state["GG"] = [
                torch.zeros(n, n, dtype=grad.dtype, device=grad.device) if has else None
                for n, has in zip(grad.shape, layout.factored)
            ]
            _accumulate_factors(state["GG"], grad, shampoo_beta)
            state["Q"] = [None if f is None else _eigenbasis(f) for f in state["GG"]]
            return

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        grad_rotated = _rotate(grad, state["Q"], into=True)
        state["step"] += 1
        exp_avg.mul_(beta1).add_(grad_rotated, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).add_(grad_rotated.square(), alpha=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        direction = layout.unview(_rotate(exp_avg / denom, state["Q"], into=False))
        if group["normalize_grads"]:
            direction = direction / (1e-30 + direction.square().mean().sqrt())

        step_size = group["lr"]
        if group["correct_bias"]:
            t = state["step"]
            step_size = step_size * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        p.add_(direction, alpha=-step_size)
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

        # The factors learn this step's gradient only now, after it was used.
        _accumulate_factors(state["GG"], grad, shampoo_beta)
        if state["step"] % group["precondition_frequency"] == 0:
            exp_avg = _rotate(exp_avg, state["Q"], into=False)
            state["Q"], state["exp_avg_sq"] = _refresh_eigenbases(state["GG"], state["Q"], exp_avg_sq)
            state["exp_avg"] = _rotate(exp_avg, state["Q"], into=True)


class _Layout:
    """How a parameter is seen by the preconditioner: the (merged) view and its factored dimensions."""

    def __init__(self, p: Tensor, group: dict):
        self.shape = p.shape
        self.channels_last = group["merge_dims"] and group["data_format"] == "channels_last" and p.ndim == 4
        shape = (self.shape[0], self.shape[3], self.shape[1], self.shape[2]) if self.channels_last else self.shape
        self.permuted_shape = shape
        self.view_shape = _merged_shape(shape, group["max_precond_dim"]) if group["merge_dims"] else tuple(shape)
        # A tensor that is 1-D to begin with is factored only with precondition_1d;
        # one that merge_dims flattened to 1-D is (upstream decides on p.ndim).
        allowed = p.ndim != 1 or group["precondition_1d"]
        self.factored = [allowed and n <= group["max_precond_dim"] for n in self.view_shape]

    def view(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return x.reshape(self.view_shape)

    def unview(self, x: Tensor) -> Tensor:
        x = x.reshape(self.permuted_shape)
        return x.permute(0, 2, 3, 1) if self.channels_last else x


def _merged_shape(shape, max_dim: int) -> tuple[int, ...]:
    """Multiply consecutive dimensions together while the product stays <= max_dim.

    A dimension that is itself larger than max_dim stays alone; size-1
    dimensions disappear into their neighbours; a tensor of size 1 becomes (1,).
    """
    merged, current = [], 1
    for n in shape:
        if current * n <= max_dim:
            current *= n
        elif current > 1:
            merged.append(current)
            current = n
        else:
            merged.append(n)
            current = 1
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


def _rotate(x: Tensor, bases: list[Tensor | None], into: bool) -> Tensor:
    """Multiply every dimension k of x by Q_k^T (into the eigenbasis) or by Q_k (back).

    Dimension 0 is contracted each time and the result appended last, so after
    one pass over the dimensions they are back in their order.
    """
    for Q in bases:
        if Q is None:
            x = x.movedim(0, -1)
        else:
            x = torch.tensordot(x, Q, dims=([0], [0 if into else 1]))
    return x


def _accumulate_factors(factors: list[Tensor | None], grad: Tensor, beta: float) -> None:
    """F_k = beta F_k + (1 - beta) (G contracted with itself over every dimension but k).

    The same floating-point operations as upstream's update_preconditioner (an
    outer product for a 1-D tensor, tensordot otherwise): a rank-deficient
    factor's null-space basis is decided by round-off, so only the same
    operations give the same basis as upstream there.
    """
    if grad.ndim == 1:
        if factors[0] is not None:
            factors[0].lerp_(grad.unsqueeze(1) @ grad.unsqueeze(0), 1 - beta)
        return
    dims = range(grad.ndim)
    for k, factor in enumerate(factors):
        if factor is not None:
            others = [d for d in dims if d != k]
            factor.lerp_(torch.tensordot(grad, grad, dims=[others] * 2), 1 - beta)


def _decomposition_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _eigenbasis(factor: Tensor) -> Tensor:
    """Eigenvectors of a symmetric factor, largest eigenvalue first (a retry in float64 if eigh fails)."""
    work = factor.to(_decomposition_dtype(factor))
    eye = torch.eye(work.shape[0], dtype=work.dtype, device=work.device)
    try:
        _, Q = torch.linalg.eigh(work + 1e-30 * eye)
    except RuntimeError:  # torch.linalg.LinAlgError: eigh did not converge
        _, Q = torch.linalg.eigh(work.double() + 1e-30 * eye.double())
    return Q.flip(1).to(factor.dtype)


def _refresh_eigenbases(
    factors: list[Tensor | None], bases: list[Tensor | None], exp_avg_sq: Tensor
) -> tuple[list[Tensor | None], Tensor]:
    """One power iteration + QR per factor; v's entries follow their columns."""
    new_bases = []
    for k, (factor, Q) in enumerate(zip(factors, bases)):
        if factor is None:
            new_bases.append(None)
            continue
        dtype = _decomposition_dtype(factor)
        F, Q = factor.to(dtype), Q.to(dtype)
        # upstream's get_orthogonal_matrix_QR, operation for operation (see _accumulate_factors)
        rayleigh = torch.diag(Q.T @ F @ Q)  # the estimated eigenvalues
        order = torch.argsort(rayleigh, descending=True)
        exp_avg_sq = exp_avg_sq.index_select(k, order)
        new_bases.append(torch.linalg.qr(F @ Q[:, order]).Q.to(factor.dtype))
    return new_bases, exp_avg_sq
