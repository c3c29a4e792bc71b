"""Incremental detokenization and stopping rules of one request.

Text grows by decoding a short window of recent tokens (a byte-level BPE token may be half of a
UTF-8 character; text ending in U+FFFD is held back until the next token completes it). Stop
strings are searched only where new text could complete one. While a request runs, the text it
shows is held back by ``len(longest stop string) - 1`` characters, so a stop string is never
streamed and then taken back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from asymcache.engine.sampling import SamplingParams


class TokenDecoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class Detokenizer:
    """Output text of one request, updated one token at a time."""

    def __init__(self, tokenizer: TokenDecoder, params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.text = ""
        self._prefix = 0  # first token of the decoding window
        self._read = 0    # tokens whose text is already in ``self.text``
        self._hold = max((len(s) for s in params.stop), default=1) - 1
        self._shown_from = 0  # text of primed tokens (prime) is not shown

    def add(self, ids: Sequence[int]) -> bool:
        """Account for the newest token of ``ids`` (all output ids); ``True`` if a stop string
        now ends the text (the text is cut there)."""
        before = self.tokenizer.decode(ids[self._prefix:self._read])
        after = self.tokenizer.decode(ids[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False
        old_len = len(self.text)
        self.text += after[len(before):]
        self._prefix, self._read = self._read, len(ids)
        return self._find_stop(old_len)

    def visible(self, finished: bool) -> str:
        """Text safe to show: all of it when finished, else without a possible stop prefix
        (after :meth:`prime`, only the text of the tokens added since)."""
        text = self.text if finished or not self._hold else \
            self.text[: max(0, len(self.text) - self._hold)]
        return text[self._shown_from:]

    def prime(self, ids: Sequence[int]) -> None:
        """Decode ``ids``, output tokens of an earlier run that this request resumes, as if
        they had been generated here: the text of later tokens continues theirs exactly (a
        character split across the boundary, a stop string spanning it), and :meth:`visible`
        shows only what comes after them. Later calls of :meth:`add` pass all output ids,
        these first."""
        for n in range(1, len(ids) + 1):
            self.add(ids[:n])
        self._shown_from = len(self.text)

    def _find_stop(self, old_len: int) -> bool:
        best = None
        for stop in self.params.stop:
            at = self.text.find(stop, max(0, old_len - len(stop) + 1))
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
        if best is None:
            return False
        at, stop = best
        self.text = self.text[: at + len(stop) if self.params.include_stop_str_in_output else at]
        return True


def finish_reason(token: int, num_output: int, num_tokens: int, params: SamplingParams,
                  eos_ids: Sequence[int], max_model_len: int) -> str | None:
    """``"stop"`` on a stop token or EOS, ``"length"`` at ``max_tokens`` or the model's
    context limit, else ``None``."""
    if token in params.stop_token_ids or (not params.ignore_eos and token in eos_ids):
        return "stop"
    if num_output >= params.max_tokens or num_tokens >= max_model_len:
        return "length"
    return None
