"""Explicit float32 attention with log-sum-exp, and the merge of two partial results.

The torch path uses these where SDPA cannot give what is asked: the LSE (``return_lse``) and
split KV (``num_splits`` > 1), whose parts are merged by :func:`merge_lse`.
"""

from __future__ import annotations

import torch


def attend_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit float32 attention with LSE.

    ``q [..., Hkv, R, D]`` (``R`` rows per KV head), ``k``/``v`` ``[..., Hkv, L, D]``,
    ``visible`` bool broadcastable to ``[..., Hkv, R, L]``. Returns float32 ``o`` and the
    natural-log LSE float32 ``[..., Hkv, R]``; rows that see nothing get ``o = 0`` and
    ``lse = -inf``.
    """
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    scores.masked_fill_(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.masked_fill(torch.isinf(lse), 0.0)[..., None])
    return torch.matmul(probs, v.float()), lse



def merge_lse(o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
              lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``o = w_a·o_a + w_b·o_b`` with ``w = exp(lse - logaddexp(lse_a, lse_b))``, in float32.

    ``o_*`` ``[..., D]``, ``lse_*`` float32 ``[...]``. A side with ``lse = -inf`` contributes
    nothing (even if its ``o`` is garbage); both ``-inf`` gives ``o = 0``, ``lse = -inf``.
    """
    lse = torch.logaddexp(lse_a.float(), lse_b.float())
    safe = lse.masked_fill(torch.isinf(lse), 0.0)
    w_a = torch.exp(lse_a.float() - safe)[..., None]
    w_b = torch.exp(lse_b.float() - safe)[..., None]
    o = torch.where(w_a > 0, w_a * o_a.float(), 0.0) + torch.where(w_b > 0, w_b * o_b.float(), 0.0)
    return o.to(o_a.dtype), lse
