"""Multivariate two-sample permutation tests on embeddings: MMD and NM-DDM.

Both keep a sliding window of vectors, and every ``evaluate_every`` vectors once
the window is full compare it with a fixed reference subsample by a
permutation test: the pooled sample is relabelled ``permutations`` times with a
seeded generator whose state is part of the detector state, and the p-value is
``(1 + #{permuted statistic >= observed}) / (1 + permutations)`` — an exact-level
test whatever the data distribution. Computation runs in torch, float64, on CUDA
when available (else CPU); results are deterministic on a given device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from scipy.spatial.distance import pdist

from driftwarden.common.optional import import_torch

from .base import (
    Detector,
    DetectorInputError,
    Evaluations,
    check_nan_policy,
    decode_array,
    encode_array,
    initial_result,
)

if TYPE_CHECKING:
    import torch


def _torch() -> Any:
    """torch, imported on first use: the default worker image has none (docs/images.md)."""
    return import_torch("the MMD or NM-DDM detector")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    torch = _torch()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_matrix(values: Any, dim: int | None, owner: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: embeddings must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1 and dim is not None and arr.size in (0, dim):
        arr = arr.reshape(-1, dim)
    if arr.ndim != 2:
        raise DetectorInputError(
            f"{owner}: expected a 2-d (rows x {dim or 'dim'}) batch, got shape {arr.shape}"
        )
    if dim is not None and arr.shape[1] != dim:
        raise DetectorInputError(
            f"{owner}: embedding dimension {arr.shape[1]} differs from the reference's {dim}; "
            "the model or its embedding layer changed — rebuild the reference"
        )
    return np.ascontiguousarray(arr, dtype=np.float64)


class _PermutationWindow(Detector):
    input_kind = "matrix"
    _DEFAULT_MAX_REFERENCE: ClassVar[int] = 500

    def __init__(
        self,
        reference: Any,
        window: int = 200,
        evaluate_every: int = 100,
        alpha: float = 0.01,
        permutations: int = 200,
        max_reference: int | None = None,
        seed: int = 0,
        nan_policy: str = "raise",
        device: str | None = None,
    ) -> None:
        name = type(self).__name__
        ref = _as_matrix(reference, None, f"{name} reference")
        ref = ref[np.isfinite(ref).all(axis=1)]
        if ref.shape[0] < 2:
            raise ValueError(
                f"{name}: needs at least 2 finite reference vectors, got {ref.shape[0]}"
            )
        if (
            window < 2
            or evaluate_every < 1
            or not 0 < alpha < 1
            or not 10 <= permutations <= 100_000
        ):
            raise ValueError(
                f"{name}: need window >= 2, evaluate_every >= 1, 0 < alpha < 1, "
                f"10 <= permutations <= 100000; got window={window!r}, "
                f"evaluate_every={evaluate_every!r}, alpha={alpha!r}, permutations={permutations!r}"
            )
        check_nan_policy(nan_policy, name)
        self.window = int(window)
        self.evaluate_every = int(evaluate_every)
        self.alpha = float(alpha)
        self.permutations = int(permutations)
        self.max_reference = int(max_reference or self._DEFAULT_MAX_REFERENCE)
        self.seed = int(seed)
        self.nan_policy = nan_policy
        torch = _torch()
        self.device = torch.device(device) if device else default_device()
        self.dim = ref.shape[1]
        # A fixed, seeded reference subsample keeps the cost O((W + R)^2) per permutation.
        if ref.shape[0] > self.max_reference:
            pick = np.random.default_rng(self.seed).choice(
                ref.shape[0], self.max_reference, replace=False
            )
            ref = ref[np.sort(pick)]
        self._reference = ref
        self._rng = np.random.default_rng(self.seed)
        self._ring = np.zeros((self.window, self.dim))
        self._pos = 0
        self._count = 0
        self._n_seen = 0
        self._n_dropped = 0
        self._result = initial_result(self.alpha)
        self._prepare()

    def _prepare(self) -> None:
        """Precompute what depends on the reference only."""

    def _statistic_and_null(
        self, pooled: torch.Tensor, perms: torch.Tensor, n_win: int
    ) -> tuple[float, torch.Tensor]:
        raise NotImplementedError

    def window_values(self) -> np.ndarray:
        if self._count < self.window:
            return self._ring[: self._count].copy()
        return np.concatenate([self._ring[self._pos :], self._ring[: self._pos]])

    def _evaluate(self) -> tuple[float, float]:
        win = self.window_values()
        pooled = np.concatenate([self._reference, win])
        n = pooled.shape[0]
        perms = self._rng.permuted(np.tile(np.arange(n), (self.permutations, 1)), axis=1)
        torch = _torch()
        t_pooled = torch.as_tensor(pooled, dtype=torch.float64, device=self.device)
        t_perms = torch.as_tensor(perms, device=self.device)
        stat, null = self._statistic_and_null(t_pooled, t_perms, win.shape[0])
        exceed = int((null >= stat).sum().item())
        return stat, (1 + exceed) / (1 + self.permutations)

    def update_many(self, values: Any) -> Evaluations:
        """Feed a (rows x dim) batch of vectors; returns the evaluations that fell in it."""
        name = f"{type(self).__name__}.update_many"
        arr = _as_matrix(values, self.dim, name)
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            if self.nan_policy == "raise":
                raise DetectorInputError(
                    f"{name}: {bad.size} row(s) with NaN/inf (first at row {bad[0]}); the batch "
                    "was not applied. Build the detector with nan_policy='omit' to drop them."
                )
            arr = arr[finite]
            self._n_dropped += int(bad.size)
        positions, stats_, pvals = [], [], []
        i = 0
        while i < arr.shape[0]:
            # copy rows up to the next evaluation point, then evaluate there
            to_next = self.evaluate_every - (self._n_seen % self.evaluate_every)
            take = min(to_next, arr.shape[0] - i)
            for row in arr[i : i + take]:
                self._ring[self._pos] = row
                self._pos = (self._pos + 1) % self.window
                self._count = min(self._count + 1, self.window)
            self._n_seen += take
            i += take
            if self._n_seen % self.evaluate_every == 0 and self._count == self.window:
                s, p = self._evaluate()
                positions.append(self._n_seen)
                stats_.append(s)
                pvals.append(p)
        stat = np.array(stats_, dtype=float)
        p = np.array(pvals, dtype=float)
        drift = p < self.alpha
        return self._evaluated(positions, stat, p, drift, self.alpha, effect_size=False)

    def _params(self) -> dict[str, Any]:
        return {
            "reference": encode_array(self._reference),
            "window": self.window,
            "evaluate_every": self.evaluate_every,
            "alpha": self.alpha,
            "permutations": self.permutations,
            "max_reference": self.max_reference,
            "seed": self.seed,
            "nan_policy": self.nan_policy,
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]):
        return cls(**{**params, "reference": decode_array(params["reference"])})

    def _get_state(self) -> dict[str, Any]:
        return {
            "window_values": encode_array(self.window_values()),
            # PCG64 state: plain ints, JSON-safe (Python ints are arbitrary precision)
            "rng": self._rng.bit_generator.state,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        v = decode_array(state["window_values"]).reshape(-1, self.dim)
        self._ring[:] = 0.0
        self._ring[: v.shape[0]] = v
        self._count = v.shape[0]
        self._pos = v.shape[0] % self.window
        self._rng.bit_generator.state = state["rng"]


class MMD(_PermutationWindow):
    """Maximum mean discrepancy with a Gaussian kernel, permutation-test p-value.

    Statistic: the biased estimate MMD² = mean k(w, w′) + mean k(r, r′) − 2·mean k(w, r)
    (Gretton et al., "A kernel two-sample test", JMLR 2012), with
    k(x, y) = exp(−‖x − y‖² / (2σ²)) and σ the median pairwise distance of the
    reference subsample (fixed at construction). One kernel matrix per
    evaluation, then every permuted statistic as sᵀKs for ±1/n label vectors:
    O(B·(W + R)²) per evaluation.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = MMD(rng.normal(size=(300, 8)), window=100, evaluate_every=100, seed=1, device="cpu")
        >>> bool(det.update_many(rng.normal(size=(100, 8))).drift[0])
        False
        >>> bool(det.update_many(rng.normal(0.5, size=(100, 8))).drift[0])
        True
    """

    kind = "mmd"

    def _prepare(self) -> None:
        med = float(np.median(pdist(self._reference)))
        self.bandwidth = med if med > 0 else 1.0

    def _statistic_and_null(self, pooled, perms, n_win):
        torch = _torch()
        n = pooled.shape[0]
        n_ref = n - n_win
        gram = torch.exp(-torch.cdist(pooled, pooled).square() / (2.0 * self.bandwidth**2))
        weights = torch.full((n,), 1.0 / n_ref, dtype=torch.float64, device=pooled.device)
        weights[n_ref:] = -1.0 / n_win
        stat = float(weights @ gram @ weights)
        s = weights[perms]  # (B, n): label weights after relabelling
        null = ((s @ gram) * s).sum(dim=1)
        return stat, null


class NMDDM(_PermutationWindow):
    """NM-DDM: a calibrated nonparametric multivariate drift test on per-sample summaries.

    No published algorithm carries the name "NM-DDM". It comes from a public
    project that expands it as *Nonparametric Multidimensional Drift Detection
    Method*: a Gaussian KDE on per-sample summaries (mean and standard deviation)
    of a hidden layer's activations, the maximum log density ratio between a
    detection and a reference window, and a fixed alarm threshold — a rule that
    is uncalibrated (it fires on most windows without drift). This detector
    keeps the idea and calibrates it, following the KDE density-ratio tests of
    Song, Wu, Jermaine & Ranka, "Statistical change detection for
    multi-dimensional data" (KDD 2007), and Kuncheva's SPLL (IEEE TKDE 2013):

    * each vector (an embedding or hidden-layer activation) is summarised by
      its mean and standard deviation across dimensions;
    * statistic T = mean over window points x of log f̂_W(x) − log f̂_R(x), a
      KL-divergence estimate, with Gaussian KDEs sharing one bandwidth matrix
      (Scott's factor times the pooled covariance; leave-one-out for f̂_W);
    * the p-value comes from a permutation null, not a constant threshold.

    Unlike DDM (Gama et al.) it needs no labels: it is a data-drift test.
    See docs/detectors.md.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = NMDDM(rng.normal(size=(200, 16)), window=100, evaluate_every=100, seed=1, device="cpu")
        >>> bool(det.update_many(rng.normal(size=(100, 16))).drift[0])
        False
        >>> bool(det.update_many(rng.normal(0.5, size=(100, 16))).drift[0])
        True
    """

    kind = "nmDdm"
    _DEFAULT_MAX_REFERENCE = 200

    @staticmethod
    def summaries(x: torch.Tensor) -> torch.Tensor:
        """Per-row (mean, std) summaries; a 1-d embedding is its own summary."""
        if x.shape[1] == 1:
            return x
        torch = _torch()
        return torch.stack([x.mean(dim=1), x.std(dim=1, correction=1)], dim=1)

    def _statistic_and_null(self, pooled, perms, n_win):
        torch = _torch()
        z = self.summaries(pooled)
        n, d = z.shape
        n_ref = n - n_win
        cov = torch.cov(z.T).reshape(d, d)
        factor = n ** (-1.0 / (d + 4))  # Scott's rule
        h = cov * factor**2 + 1e-12 * torch.eye(d, dtype=z.dtype, device=z.device)
        chol = torch.linalg.cholesky(h)
        diff = z[:, None, :] - z[None, :, :]
        sol = torch.linalg.solve_triangular(chol, diff.reshape(-1, d).T, upper=False)
        logk = -0.5 * sol.square().sum(dim=0).reshape(n, n)  # log kernel up to a constant
        # Kernel sums over any subset are then one matrix product per batch of
        # relabellings. Each row is scaled by its largest off-diagonal entry so
        # at least one term is 1 (no underflow of whole rows).
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        off = logk.masked_fill(eye, -math.inf)
        row_max = off.max(dim=1, keepdim=True).values
        kern = torch.exp(off - row_max)  # zero on the diagonal: leave-one-out
        tiny = torch.finfo(z.dtype).tiny

        def stat_for(win_mask: torch.Tensor) -> torch.Tensor:
            w = win_mask.to(z.dtype)  # (B, n)
            sum_w = w @ kern.T  # sum over window points j != i, for every i
            sum_r = (1.0 - w) @ kern.T
            log_ratio = (
                torch.log(sum_w.clamp_min(tiny))
                - math.log(n_win - 1)
                - torch.log(sum_r.clamp_min(tiny))
                + math.log(n_ref)
            )
            return (log_ratio * w).sum(dim=1) / n_win

        observed = torch.zeros((1, n), dtype=torch.bool, device=z.device)
        observed[0, n_ref:] = True
        stat = float(stat_for(observed)[0])
        null = stat_for(perms >= n_ref)  # relabelled: positions holding original window indices
        return stat, null


__all__ = ["MMD", "NMDDM", "default_device"]
