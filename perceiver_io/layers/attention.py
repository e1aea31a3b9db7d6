"""Multi-head attention: the one implementation used by the encoder, the decoders and every head."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from perceiver_io.layers import onednn
from perceiver_io.layers.onednn import OneDNNLinear
from perceiver_io.layers.timing import fastest

# The plain paths compute attention in blocks of (example, head) pairs × queries. Pairs are grouped while their
# scores stay within this many (8 MB in float32), so a block's scores stay in cache between the two GEMMs and the
# softmax: 1.5–3× faster than one pass over all B·H·T·S scores for flow's and batch-8 vision's self-attention.
SCORE_BLOCK_ELEMENTS = 1 << 21
# A pair with more scores than that is split into blocks of queries: no fewer than MIN_BLOCK_ROWS (GEMMs with a
# few dozen rows run at a third of their speed) unless that would exceed SCORE_MEMORY_ELEMENTS (64 MB in float32),
# which bounds inference memory for cross-attention over 10⁵–10⁶ inputs or a decoder with 10⁵ queries.
MIN_BLOCK_ROWS = 256
SCORE_MEMORY_ELEMENTS = 1 << 24
# Cross-attention over more inputs than one key block (``key_block_size``) is computed, without autograd, one block
# of keys at a time with an online softmax: its inputs' LayerNorm, keys and values never exist for all inputs at
# once (3× the inputs' size otherwise). Blocks hold at least this many keys, so the GEMMs stay wide.
MIN_KEY_BLOCK = 4096
KEY_BLOCK_SCORES = 1 << 22  # 16 MB of float32 scores per key block

# oneDNN's per-(example, head) GEMMs need this many scores per pair to amortise their per-call cost (language
# self-attention, 256 × 256 per head: 0.75× the plain path).
ONEDNN_MIN_PAIR_SCORES = 1 << 17
# Attention over more keys than this (flow's 182,528 inputs) splits its queries into thin blocks: float32 then keeps
# SDPA's flash kernel (1.1× over oneDNN), bf16 prefers oneDNN's GEMMs over torch's (1.2×).
HUGE_KEY_SET = 1 << 16


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask (True = attend) → additive bias with the dtype's most negative value.

    A large finite value rather than -inf keeps a fully masked row finite: it then attends uniformly, as in
    transformers (DeepMind's -1e30 does the same in float32).
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def rule_path(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> str:
    """The kernel a 2-core Zen 5 computes softmax(qkᵀ/√d)v fastest with: ``"sdpa"``, ``"plain"`` or ``"onednn"``
    (``benchmarks/attention_paths.py``, results/attention_paths_zen5.md). ``attention_path`` measures instead
    where it can; this rule decides where it cannot (autograd, tracing, ``onednn.use("on" | "off")``).

      float32: SDPA's CPU flash kernel wins where q and v heads have equal width (1.2–4× over the plain path for
        latent self-attention, 1.1–2× for the big single-head cross-attentions); with unequal widths (the language
        model's 32/160) it does not apply and its unfused fallback runs at 0.7–0.85× the plain path.
      bfloat16: the plain path (oneDNN's bf16 GEMMs, blocked) beats SDPA everywhere, 1.6–3.7×.
      Where ``onednn.forced`` (``onednn.use("on")``): in float32, the plain path with oneDNN's GEMMs beats the best
        of the others 1.3–2× (ONEDNN_MIN_PAIR_SCORES and HUGE_KEY_SET mark the exceptions).
    Off CPU the fused kernels always win. Dropout needs a plain path on CPU: SDPA's flash kernel has none.
    """
    if q.device.type != "cpu":
        return "sdpa"
    t, s = q.shape[-2], k.shape[-2]
    fusable = dropout_p == 0 and q.shape[-1] == v.shape[-1]
    # forced() first: under export it is False, and the size test would then pin a dynamic query count.
    onednn_ok = onednn.forced(q, k, v) and t * s >= ONEDNN_MIN_PAIR_SCORES
    if q.dtype not in (torch.float32, torch.float64):
        return "onednn" if onednn_ok and s > HUGE_KEY_SET else "plain"
    if onednn_ok and not (fusable and s > HUGE_KEY_SET):
        return "onednn"
    return "sdpa" if fusable else "plain"


def attention_path(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    run: Callable[[str], object] | None = None,
    caller: tuple = (),
) -> str:
    """Which kernel computes softmax(qkᵀ/√d)v fastest here: ``"sdpa"``, ``"plain"`` or ``"onednn"``.

    The winner differs by CPU as much as by shape: oneDNN's per-(example, head) GEMMs run 1.3–2× ahead of SDPA on a
    Zen 5 and up to 2× behind it on an Intel Xeon (benchmarks/results/attention_paths*.md). So in CPU inference
    (``onednn.plain_inference``, ``onednn.use("auto")``, no dropout) with ``run`` (the caller's attention on these
    tensors through a given path) the candidates are timed once per process on the first call of each shape and
    ``caller`` (what else decides the cost, e.g. the mask's shape): a warm-up, then the best of 1–3 timed calls;
    the fastest is kept for every later call. Every path computes the same attention within float32 rounding.
    Elsewhere ``rule_path`` decides.
    """
    if run is None or dropout_p or onednn.mode() != "auto" or not onednn.plain_inference(q, k, v):
        return rule_path(q, k, v, dropout_p)
    candidates = ["plain"]
    if q.shape[-1] == v.shape[-1]:
        candidates.append("sdpa")
    if onednn.allowed(q, k, v):
        candidates.append("onednn")
    key = (q.dtype, q.shape[0] * q.shape[1], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1], caller)
    key += (torch.get_num_threads(),)
    if key not in _MEASURED_PATHS:
        _MEASURED_PATHS[key] = fastest(candidates, run, flops=2 * q[..., 0].numel() * k.shape[-2] * v.shape[-1])
    return _MEASURED_PATHS[key]


# (dtype, pairs, T, S, Dqk, Dv, caller, threads) -> the path measured fastest in this process.
_MEASURED_PATHS: dict[tuple, str] = {}


def measured_paths() -> dict[tuple, str]:
    """The choices ``attention_path`` has timed in this process (a copy): (dtype, (example, head) pairs, T, S,
    Dqk, Dv, caller, threads) → the fastest path."""
    return dict(_MEASURED_PATHS)


def score_blocks(
    pairs: int, t: int, s: int, max_scores: int = SCORE_BLOCK_ELEMENTS, max_pairs: int | None = None
) -> list[tuple[slice, slice]]:
    """Blocks (pair range, query range) covering ``pairs`` (example, head) pairs × ``t`` queries over ``s`` keys.

    Whole pairs are grouped (at most ``max_pairs``) while their scores fit in ``max_scores``; a larger pair is
    split into blocks of queries (see MIN_BLOCK_ROWS and SCORE_MEMORY_ELEMENTS, scaled with ``max_scores``).
    """
    if t * s <= max_scores:
        group = min(max_scores // (t * s), max_pairs or pairs)
        return [(slice(i, i + group), slice(0, t)) for i in range(0, pairs, group)]
    memory_rows = max_scores * (SCORE_MEMORY_ELEMENTS // SCORE_BLOCK_ELEMENTS) // s
    rows = max(1, max_scores // s, min(MIN_BLOCK_ROWS, memory_rows))
    return [(slice(i, i + 1), slice(r, r + rows)) for i in range(pairs) for r in range(0, t, rows)]


def _softmax(scores: torch.Tensor, mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    """Row softmax of scores (…, T, S), masked (bool, broadcastable; True = attend), with dropout."""
    if mask is not None:
        # Same result as adding the finite bias of mask_to_bias: a masked score becomes the dtype's minimum.
        scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    return F.dropout(probs, dropout_p) if dropout_p else probs


def _torch_block(
    q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """softmax(q kᵀ) v with torch's GEMMs: q (…, T, Dqk) pre-scaled, kt (…, Dqk, S), v (…, S, Dv) → (…, T, Dv)."""
    return torch.matmul(_softmax(torch.matmul(q, kt), mask, dropout_p), v)


def _onednn_block(
    q: torch.Tensor, k: torch.Tensor, vt: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """One (example, head) pair through oneDNN: q (1, T, Dqk) pre-scaled, k (1, S, Dqk) and vt (1, Dv, S)
    contiguous → (1, T, Dv)."""
    scores = onednn.linear(q[0], k[0])  # (T, S) = q kᵀ
    return onednn.linear(_softmax(scores, None if mask is None else mask[0], dropout_p), vt[0])[None]


def plain_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    max_scores: int = SCORE_BLOCK_ELEMENTS,
    use_onednn: bool = False,
) -> torch.Tensor:
    """softmax(q kᵀ/√d) v in blocks of at most ``max_scores`` scores (``score_blocks``; exact: every query's softmax
    is independent), with torch's GEMMs or, ``use_onednn``, oneDNN's (one (example, head) pair per block). Under
    autograd the torch path runs as one block (see below), so its scores are not bounded by ``max_scores``.

    q: (B, H, T, Dqk), k: (B, H, S, Dqk), v: (B, H, S, Dv), mask: bool (B, T or 1, S) → (B, H, T, Dv).
    """
    b, h, t, dqk = q.shape
    s, dv = k.shape[-2], v.shape[-1]
    q = q * dqk**-0.5  # scaling the (T, D) queries is cheaper than scaling the (T, S) scores
    mask = None if mask is None else mask[:, None]  # (B, 1, T or 1, S): the same for every head
    if use_onednn:  # oneDNN's "weights" k and vᵀ must be contiguous, or it builds a new kernel per call (100× slower)
        k, v = k.contiguous(), v.transpose(-1, -2).contiguous()
    else:  # kᵀ laid out once: bf16 GEMMs on a transposed view of k run 1.5–7× slower
        k = k.transpose(-1, -2).contiguous()
        if torch.compiler.is_compiling() or onednn.recording(q, k, v) or b * h * t * s <= max_scores:
            # One block. Traced graphs always take this form: loops over examples would pin a dynamic batch size
            # (and so would the size test, were it evaluated first). So does training: autograd keeps every
            # block's probabilities anyway, and writing blocks into one output costs a copy and a zero-fill per
            # block in the backward pass (a profiled vision-fourier batch-4 step: 4.9 s of 28.6 s).
            return _torch_block(q, k, v, mask, dropout_p)
    pairs = b * h
    q, k, v = q.reshape(pairs, t, dqk), k.reshape(pairs, *k.shape[2:]), v.reshape(pairs, *v.shape[2:])
    if mask is not None:
        mask = mask.expand(b, h, *mask.shape[2:]).reshape(pairs, *mask.shape[2:])
    block_fn = _onednn_block if use_onednn else _torch_block
    out = q.new_empty(pairs, t, dv)
    for p, rows in score_blocks(pairs, t, s, max_scores, 1 if use_onednn else None):
        block_mask = None if mask is None else mask[p, rows] if mask.shape[1] > 1 else mask[p]
        out[p, rows] = block_fn(q[p, rows], k[p], v[p], block_mask, dropout_p)
    return out.view(b, h, t, dv)


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with the mask as a finite bias; same arguments as ``plain_attention``.

    Its CPU flash kernel walks the keys in blocks with an online softmax: no (T, S) score matrix is materialised,
    even for 10⁵–10⁶ keys (peak memory measured flat for 2048 queries × 182,528 keys, with and without a mask).
    """
    bias = None if mask is None else mask_to_bias(mask[:, None], q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)


def key_block_size(batch: int, heads: int, queries: int) -> int:
    """Keys per block for ``attend_key_blocks``: one block's scores (B, H, T, block) hold at most
    KEY_BLOCK_SCORES values, and a block at least MIN_KEY_BLOCK keys."""
    return max(MIN_KEY_BLOCK, KEY_BLOCK_SCORES // max(1, batch * heads * queries))


def _exp_scores(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In place (no autograd here): scores (…, T, S) → exp(scores − row max), the row max (…, T, 1) and the rows'
    sums (…, T, 1) in float32, so that bf16 scores still give an accurate log-sum-exp."""
    peak = scores.amax(dim=-1, keepdim=True)
    weights = scores.sub_(peak).exp_()
    return weights, peak, weights.sum(dim=-1, keepdim=True, dtype=torch.float32)


def _normalised(out: torch.Tensor, peak: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised block output (…, T, Dv) → (float32 output, float32 log-sum-exp (…, T))."""
    return out.float() / total, (peak.float() + total.log()).squeeze(-1)


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of q over one block of keys and the log-sum-exp of its scores, both float32, through the path
    attention_path picks: (B, H, T, Dv), (B, H, T). Unmasked, no dropout, no autograd (CPU inference)."""
    path = attention_path(q, k, v, run=lambda p: _partial_attention_on(p, q, k, v), caller=("key block",))
    return _partial_attention_on(path, q, k, v)


def _partial_attention_on(
    path: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``partial_attention`` through ``path``."""
    if path == "sdpa":
        # The op behind F.scaled_dot_product_attention on CPU; it also returns the log-sum-exp the merge needs.
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
        return out.float(), lse.float()
    b, h, t, dqk = q.shape
    q = q * dqk**-0.5
    if path == "plain":
        weights, peak, total = _exp_scores(torch.matmul(q, k.transpose(-1, -2).contiguous()))
        return _normalised(torch.matmul(weights, v), peak, total)
    k, vt = k.contiguous(), v.transpose(-1, -2).contiguous()  # contiguous "weights" for oneDNN
    outs, lses = [], []
    for i in range(b):
        for j in range(h):
            weights, peak, total = _exp_scores(onednn.linear(q[i, j], k[i, j]))
            out, lse = _normalised(onednn.linear(weights, vt[i, j]), peak, total)
            outs.append(out)
            lses.append(lse)
    return torch.stack(outs).view(b, h, t, -1), torch.stack(lses).view(b, h, t)


def attend_key_blocks(q: torch.Tensor, blocks: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """softmax(q kᵀ/√d) v over all keys, given as blocks of (k (B, H, S_j, Dqk), v (B, H, S_j, Dv)): an online
    softmax merges each block's normalised output by its log-sum-exp, in float32 (exact up to rounding).

    Unmasked, no dropout, no autograd: see ``PerceiverLayer`` for when this applies. → (B, H, T, Dv).
    """
    out = lse = None
    for k, v in blocks:
        part, part_lse = partial_attention(q, k, v)
        if out is None:
            out, lse = part, part_lse
            continue
        merged = torch.logaddexp(lse, part_lse)
        out = out.mul_((lse - merged).exp_()[..., None]).add_(part.mul_((part_lse - merged).exp_()[..., None]))
        lse = merged
    return out.to(q.dtype)


def weighted_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ/√d) v in one pass over all B·H·T·S scores, returning the probabilities too; same arguments as
    ``plain_attention`` → (B, H, T, Dv), (B, H, T, S).

    Only for calls that ask for attention maps: the fast paths never hold every probability at once. The maps are
    taken after dropout (the weights that multiplied the values), as transformers returns them.
    """
    q = q * q.shape[-1] ** -0.5
    probs = _softmax(torch.matmul(q, k.transpose(-1, -2)), None if mask is None else mask[:, None], dropout_p)
    return torch.matmul(probs, v), probs


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    wipe_fully_masked_rows: bool = False,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention with per-head scaling 1/sqrt(d_qk), through the path attention_path picks, or
    ``weighted_attention`` when the probabilities are wanted.

    Args:
        q: (B, H, T, Dqk) queries; k: (B, H, S, Dqk) keys; v: (B, H, S, Dv) values.
        mask: optional bool (B, T, S) or (B, 1, S); True marks a key the query may attend to.
        wipe_fully_masked_rows: zero the output of queries whose keys are all masked (DeepMind's rule); their
            returned probabilities are zeroed with it.
        need_weights: also return the attention probabilities.
    Returns:
        (B, H, T, Dv), and the probabilities (B, H, T, S) if ``need_weights`` else None.
    """
    probs = None
    if need_weights:
        out, probs = weighted_attention(q, k, v, mask, dropout_p)
    else:
        caller = ("attend", None if mask is None else tuple(mask.shape))
        path = attention_path(q, k, v, dropout_p, run=lambda p: _attend_on(p, q, k, v, mask, dropout_p), caller=caller)
        out = _attend_on(path, q, k, v, mask, dropout_p)
    if wipe_fully_masked_rows and mask is not None:
        keep = mask.any(dim=-1)[:, None, :, None].to(out.dtype)
        out = out * keep
        probs = None if probs is None else probs * keep
    return out, probs


def _attend_on(
    path: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """softmax(q kᵀ/√d) v through ``path`` (see ``attend``) → (B, H, T, Dv)."""
    if path == "sdpa":
        return sdpa_attention(q, k, v, mask, dropout_p)
    return plain_attention(q, k, v, mask, dropout_p, use_onednn=path == "onednn")


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/output projections (DeepMind's `Attention`).

    qk_channels and v_channels are totals over heads; output_channels defaults to v_channels.
    """

    def __init__(
        self,
        q_dim: int,
        kv_dim: int,
        qk_channels: int,
        v_channels: int,
        output_channels: int,
        num_heads: int,
        dropout: float = 0.0,
        wipe_fully_masked_rows: bool = False,
    ) -> None:
        super().__init__()
        if qk_channels % num_heads or v_channels % num_heads:
            raise ValueError(
                f"qk_channels={qk_channels} and v_channels={v_channels} must be divisible by num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.dropout = dropout
        self.wipe_fully_masked_rows = wipe_fully_masked_rows
        # nn.Linear while autograd records and off CPU; one oneDNN call in CPU inference (layers/onednn.py).
        self.q = OneDNNLinear(q_dim, qk_channels)
        self.k = OneDNNLinear(kv_dim, qk_channels)
        self.v = OneDNNLinear(kv_dim, v_channels)
        self.o = OneDNNLinear(v_channels, output_channels)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, H, N, C/H)

    def keys_values(self, x_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected keys and values of x_kv (B, S, Ckv) → (B, H, S, Dqk), (B, H, S, Dv).

        Computed once when several chunks of queries attend to the same inputs (see ``forward``).
        """
        return self._heads(self.k(x_kv)), self._heads(self.v(x_kv))

    def forward(
        self,
        x_q: torch.Tensor,
        x_kv: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x_q: (B, T, Cq), x_kv: (B, S, Ckv), mask: bool (B, T, S) or (B, 1, S) → (B, T, output_channels), and
        with ``output_attentions`` the attention probabilities (B, H, T, S) as a second value.

        ``keys_values`` (from ``keys_values(x_kv)``) replaces ``x_kv``.
        """
        k, v = self.keys_values(x_kv) if keys_values is None else keys_values
        out, probs = attend(
            self._heads(self.q(x_q)),
            k,
            v,
            mask,
            dropout_p=self.dropout if self.training else 0.0,
            wipe_fully_masked_rows=self.wipe_fully_masked_rows,
            need_weights=output_attentions,
        )
        return (self._merge_heads(out), probs) if output_attentions else self._merge_heads(out)

    def forward_key_blocks(self, x_q: torch.Tensor, x_kv: torch.Tensor, kv_norm: nn.Module, block: int) -> torch.Tensor:
        """``forward(x_q, kv_norm(x_kv))`` computed ``block`` keys at a time (``attend_key_blocks``), so that the
        normalised inputs, keys and values never exist for all inputs at once. Unmasked and without autograd only.

        x_q: (B, T, Cq), x_kv: (B, S, Ckv) → (B, T, output_channels).
        """
        blocks = (self.keys_values(kv_norm(x_kv[:, i : i + block])) for i in range(0, x_kv.shape[1], block))
        return self._merge_heads(attend_key_blocks(self._heads(self.q(x_q)), blocks))

    def _merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D) attention output → output projection (B, T, output_channels)."""
        b, h, t, d = out.shape
        # SDPA's CPU kernel lays its output out as (B, T, H, D): this reshape is then a free view.
        return self.o(out.transpose(1, 2).reshape(b, t, h * d))
