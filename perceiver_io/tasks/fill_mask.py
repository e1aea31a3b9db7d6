"""Masked byte prediction, as in DeepMind's masked-language-modelling colab.

Text is read as UTF-8 bytes; byte ``b`` is token ``b + 6`` (ids 0-5 are PAD, BOS, EOS, MASK, CLS, SEP, 262 ids
in all). As in the colab, no special tokens are added: the bytes are followed by PAD up to the model's
``max_position_embeddings`` (2048) with attention mask 0 there, the chosen bytes are replaced by MASK, and each
masked position is predicted by an argmax over all 262 ids.

Which bytes to mask is given either as byte ranges (``spans=[(51, 60)]``, end exclusive) or by markers in the
text (used only when no spans are given):

- ``[MASK:n]`` stands for ``n`` unknown bytes to predict;
- ``[[text]]`` masks the bytes of ``text``; the original is kept to compare with the prediction.

Text longer than the model's window is refused, not chunked: bytes beyond the window would silently take no
part in the prediction, and a span cut at a chunk edge would be predicted without its context.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from perceiver_io.tasks.common import evaluating, require_head, to_model

PAD_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID = range(6)
NUM_SPECIAL = 6
SPECIAL_NAMES = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
MARKER = re.compile(r"\[MASK:(\d+)\]|\[\[(.*?)\]\]", re.DOTALL)
FILL_MASK_HEADS = ("PerceiverForMaskedLM",)


@dataclass
class MaskedPosition:
    """One masked byte: its position, the original token (when the text gave it) and the top-k tokens."""

    position: int
    original: str | None
    top_k: list[tuple[str, float]]


@dataclass
class FillMaskResult:
    """``text``: the input with every masked byte replaced by its argmax prediction (special tokens dropped,
    invalid UTF-8 shown as U+FFFD, as DeepMind's ``to_string``); ``predictions``: the predicted text of each
    span; ``original``: each span's original text, or None for ``[MASK:n]`` spans."""

    text: str
    spans: list[tuple[int, int]]
    predictions: list[str]
    original: list[str | None]
    positions: list[MaskedPosition]
    predicted_ids: list[int]


def token_to_str(token: int) -> str:
    """A readable name for one token id: the special token's name, the ASCII character, or ``\\xNN``."""
    if token < NUM_SPECIAL:
        return SPECIAL_NAMES[token]
    byte = token - NUM_SPECIAL
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"


def ids_to_text(ids: Sequence[int]) -> str:
    """Token ids → text: special tokens dropped, the remaining bytes decoded as UTF-8 with replacement."""
    return bytes(i - NUM_SPECIAL for i in ids if i >= NUM_SPECIAL).decode("utf-8", errors="replace")


def parse_masked_text(text: str) -> tuple[bytes, list[tuple[int, int]], list[bytes | None]]:
    """Resolve ``[MASK:n]`` and ``[[text]]`` markers.

    Returns:
        ``(data, spans, originals)``: the UTF-8 bytes with each marker replaced by its bytes (``n`` zero bytes
        for ``[MASK:n]``, to be masked anyway), the byte span of each marker, and each span's original bytes
        (None for ``[MASK:n]``).
    """
    data, spans, originals = bytearray(), [], []
    last = 0
    for match in MARKER.finditer(text):
        data += text[last : match.start()].encode("utf-8")
        count, hidden = match.groups()
        piece = bytes(int(count)) if count is not None else hidden.encode("utf-8")
        if not piece:
            raise ValueError(f"empty mask marker {match.group(0)!r} at character {match.start()}")
        spans.append((len(data), len(data) + len(piece)))
        originals.append(None if count is not None else piece)
        data += piece
        last = match.end()
    data += text[last:].encode("utf-8")
    return bytes(data), spans, originals


def _check_spans(spans: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    checked = []
    for span in spans:
        start, end = (int(s) for s in span)
        if not 0 <= start < end <= length:
            raise ValueError(f"mask span {start}:{end} is not a non-empty byte range inside the text's {length} bytes")
        checked.append((start, end))
    return checked


def fill_mask(
    model: nn.Module, text: str, spans: Sequence[tuple[int, int]] | None = None, top_k: int = 5
) -> FillMaskResult:
    """Predict the masked bytes of ``text`` with a ``PerceiverForMaskedLM``.

    Args:
        model: a masked-language model; its ``config.max_position_embeddings`` is the window (2048).
        text: the text; with ``spans=None`` its ``[MASK:n]`` / ``[[text]]`` markers choose what to mask.
        spans: byte ranges ``(start, end)`` (end exclusive) into ``text.encode("utf-8")`` to mask; the text is
            then taken literally (markers are not parsed).
        top_k: how many candidates to report per masked position.

    Returns:
        `FillMaskResult`; for the colab's example, ``predictions == [" missing."]`` with DeepMind's weights. Any
        precision of `optimize_for_inference` works: the logits are converted to float32 before the softmax.

    Raises:
        TypeError: ``model`` is not a masked-language model.
        ValueError: nothing masked, a span outside the text, text longer than the model's window, or
            ``top_k`` < 1.
    """
    require_head(model, FILL_MASK_HEADS, "fill-mask")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if spans is None:
        data, spans, originals = parse_masked_text(text)
    else:
        data = text.encode("utf-8")
        spans = _check_spans(spans, len(data))
        originals = [data[s:e] for s, e in spans]
    if not spans:
        raise ValueError("nothing to fill: mark bytes with [MASK:n] or [[text]], or give byte ranges (--mask 51:60)")
    window = model.config.max_position_embeddings
    if len(data) > window:
        raise ValueError(
            f"text is {len(data)} UTF-8 bytes but the model reads at most {window}; fill-mask does not chunk "
            "longer text (the rest would not be seen), so shorten it around the masked part"
        )

    ids = torch.full((1, window), PAD_ID, dtype=torch.long)
    ids[0, : len(data)] = torch.tensor(list(data), dtype=torch.long) + NUM_SPECIAL
    attention_mask = torch.zeros(1, window, dtype=torch.long)
    attention_mask[0, : len(data)] = 1
    input_ids = ids.clone()
    positions = sorted({p for start, end in spans for p in range(start, end)})
    ids[0, positions] = MASK_ID

    with evaluating(model):
        logits = model(inputs=to_model(ids, model), attention_mask=to_model(attention_mask, model)).logits[0, positions]
    probs = logits.float().softmax(dim=-1).cpu()
    best = probs.argmax(dim=-1)
    top_p, top_i = probs.topk(min(top_k, probs.shape[-1]), dim=-1)

    filled = input_ids[0, : len(data)].clone()
    filled[positions] = best
    by_position = dict(zip(positions, best.tolist(), strict=True))
    masked = [
        MaskedPosition(
            position=p,
            original=None if originals[_span_of(p, spans)] is None else token_to_str(int(input_ids[0, p])),
            top_k=[(token_to_str(int(i)), float(q)) for i, q in zip(top_i[n], top_p[n], strict=True)],
        )
        for n, p in enumerate(positions)
    ]
    return FillMaskResult(
        text=ids_to_text(filled.tolist()),
        spans=list(spans),
        predictions=[ids_to_text([by_position[p] for p in range(s, e)]) for s, e in spans],
        original=[None if o is None else o.decode("utf-8", errors="replace") for o in originals],
        positions=masked,
        predicted_ids=best.tolist(),
    )


def _span_of(position: int, spans: Sequence[tuple[int, int]]) -> int:
    return next(n for n, (start, end) in enumerate(spans) if start <= position < end)
