"""Byte-level UTF-8 tokenizer for Perceiver IO, equal in output to transformers' ``PerceiverTokenizer``.

Every UTF-8 byte ``b`` becomes id ``b + 6``; ids 0-5 are the special tokens ``[PAD] [BOS] [EOS] [MASK] [CLS]
[SEP]``, so the model's embedding table has 262 rows. Nothing here imports transformers.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"

# Order fixes the ids: the n-th name gets id n.
_SPECIAL_TOKEN_NAMES = ("pad_token", "bos_token", "eos_token", "mask_token", "cls_token", "sep_token")
_NUM_SPECIAL_TOKENS = len(_SPECIAL_TOKEN_NAMES)
_NUM_BYTES = 256
_CONFIG_KEYS = (
    *_SPECIAL_TOKEN_NAMES,
    "model_max_length",
    "padding_side",
    "truncation_side",
    "split_special_tokens",
    "do_lower_case",
)
# Both spellings of the list of extra special tokens: transformers 5 writes the first, earlier versions the second.
_EXTRA_SPECIAL_KEYS = ("extra_special_tokens", "additional_special_tokens")
_ADDED_TOKEN_FLAGS = ("lstrip", "rstrip", "single_word", "normalized", "special")

_PADDING_STRATEGIES = {False: None, "do_not_pad": None, True: "longest", "longest": "longest"}
_TRUNCATION_STRATEGIES = {
    False: False,
    "do_not_truncate": False,
    True: True,
    "longest_first": True,
    "only_first": True,
}

ReturnTensors = Literal["pt", "np"]


class BatchEncoding(dict):
    """Dict of model inputs that also allows attribute access (``enc.input_ids``), like transformers'.

    Values are lists of ints, ``np.ndarray`` or ``torch.Tensor`` of shape ``(batch, seq_len)``.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: str | torch.device) -> BatchEncoding:
        """Move every ``torch.Tensor`` value to ``device``; other values are kept as they are."""
        return type(self)({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


def _to_tensor(rows: list[list[int]], key: str, return_tensors: str) -> np.ndarray | torch.Tensor:
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(
            f"cannot stack '{key}' into one tensor: sequence lengths differ ({lengths}); "
            "pass padding=True or padding='max_length'"
        )
    array = np.asarray(rows, dtype=np.int64)
    return torch.from_numpy(array) if return_tensors == "pt" else array


class PerceiverTokenizer:
    """UTF-8 byte tokenizer with six special tokens, drop-in for transformers' ``PerceiverTokenizer``.

    With ``add_special_tokens=True`` (transformers' default) a text becomes ``[CLS] bytes... [SEP]``;
    DeepMind's original masked-LM pipeline adds no special tokens: use ``add_special_tokens=False``.

    As in transformers, the literal strings of the special tokens (``"[MASK]"`` ...) inside a text are
    encoded as the special ids, not as their bytes; ``split_special_tokens=True`` encodes them as bytes.

    Deliberate departures from transformers (each only where transformers gives an unusable result):

    - ``vocab_size`` is 262, the number of ids (transformers reports 256, the byte count; its ``len()``
      is 262).
    - ``padding="max_length"`` with truncation off and a sequence longer than ``max_length`` raises
      ``ValueError``; transformers silently returns the longer, unpadded sequence.
    - Truncating to a ``max_length`` below the number of special tokens (2), or any ``max_length`` below 1,
      raises ``ValueError``; transformers returns sequences longer than ``max_length`` or ignores it.
    - A non-``str`` text raises ``TypeError`` (transformers: ``ValueError``); decoding an id outside
      ``[0, 262)`` raises ``ValueError``.
    - ``do_lower_case=True`` lowercases the text (special and added tokens are matched first, as written);
      transformers stores the flag but encodes the text unchanged.
    - Added tokens (``add_tokens``, ``add_special_tokens``, ``additional_special_tokens=``) take ids 262 and up
      as in transformers; ``single_word`` tokens and changing the six named special tokens are not supported.
    - Text pairs, pre-tokenized input and ``pad_to_multiple_of`` are not supported.
    """

    model_input_names = ("input_ids", "attention_mask")
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    mask_token_id = 3
    cls_token_id = 4
    sep_token_id = 5

    def __init__(
        self,
        pad_token: str = "[PAD]",
        bos_token: str = "[BOS]",
        eos_token: str = "[EOS]",
        mask_token: str = "[MASK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        model_max_length: int = 2048,
        padding_side: Literal["right", "left"] = "right",
        truncation_side: Literal["right", "left"] = "right",
        split_special_tokens: bool = False,
        do_lower_case: bool = False,
        additional_special_tokens: Sequence[Any] = (),
    ) -> None:
        tokens = (pad_token, bos_token, eos_token, mask_token, cls_token, sep_token)
        for name, token in zip(_SPECIAL_TOKEN_NAMES, tokens, strict=True):
            if not isinstance(token, str) or not token:
                raise ValueError(f"{name} must be a non-empty str, got {token!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"special tokens must be distinct, got {tokens}")
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("right", "left"):
                raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
        if not isinstance(model_max_length, int) or model_max_length < 1:
            raise ValueError(f"model_max_length must be a positive int, got {model_max_length!r}")
        self.pad_token, self.bos_token, self.eos_token, self.mask_token, self.cls_token, self.sep_token = tokens
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.split_special_tokens = split_special_tokens
        if not isinstance(do_lower_case, bool):
            raise TypeError(f"do_lower_case must be a bool, got {type(do_lower_case).__name__}")
        self.do_lower_case = do_lower_case
        self._special_to_id = {token: i for i, token in enumerate(tokens)}
        # Added tokens, id 262 + position: (content, lstrip, rstrip, special).
        self._added: list[tuple[str, bool, bool, bool]] = []
        self._additional_special: list[str] = []
        self._build_pattern()
        if additional_special_tokens:
            self.add_special_tokens({"additional_special_tokens": additional_special_tokens})

    def _build_pattern(self) -> None:
        """The regex matching every special and added token; ``lastgroup`` names the matched token's id."""
        entries = [(token, i, False, False) for token, i in self._special_to_id.items()]
        entries += [(c, _NUM_SPECIAL_TOKENS + _NUM_BYTES + i, l, r) for i, (c, l, r, _) in enumerate(self._added)]
        # Longest first so that a token which is a prefix of another cannot win the match.
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
        alternatives = [
            ("\\s*" if lstrip else "") + f"(?P<t{i}>{re.escape(token)})" + ("\\s*" if rstrip else "")
            for token, i, lstrip, rstrip in entries
        ]
        self._special_pattern = re.compile("|".join(alternatives))
        self._token_to_id = {entry[0]: entry[1] for entry in entries}

    @property
    def vocab_size(self) -> int:
        """Number of ids, 262: the 6 special tokens plus the 256 byte values."""
        return _NUM_SPECIAL_TOKENS + _NUM_BYTES

    def __len__(self) -> int:
        """Number of ids including added tokens: 262 + ``len(added tokens)`` (transformers' ``len()``)."""
        return self.vocab_size + len(self._added)

    @property
    def all_special_tokens(self) -> list[str]:
        """The six special token strings in id order, then the additional special tokens."""
        return list(self._special_to_id) + self._additional_special

    @property
    def all_special_ids(self) -> list[int]:
        """The six special ids ``[0, 1, 2, 3, 4, 5]``, then those of the additional special tokens."""
        return list(range(_NUM_SPECIAL_TOKENS)) + [self._token_to_id[t] for t in self._additional_special]

    @property
    def additional_special_tokens(self) -> list[str]:
        """Extra special tokens (``add_special_tokens({"additional_special_tokens": ...})``), a fresh list."""
        return list(self._additional_special)

    @property
    def extra_special_tokens(self) -> list[str]:
        """transformers 5's name for ``additional_special_tokens``."""
        return self.additional_special_tokens

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """Added tokens (ids 262 and up) by content."""
        return {content: self.vocab_size + i for i, (content, *_) in enumerate(self._added)}

    def add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        """Give each new token the next id (262, 263 ...) and encode it as that one id from now on.

        ``new_tokens``: a ``str``, an object with transformers' ``AddedToken`` fields (``content``, ``lstrip``,
        ``rstrip``, ``single_word``, ``normalized``, ``special``) or a list of them. ``lstrip``/``rstrip`` absorb
        the whitespace left/right of the token, as in transformers; ``single_word=True`` is not supported
        (``ValueError``). Tokens already in the vocabulary (a special token, an added one, or one character below
        U+0100, which is a byte id) are skipped. Returns the number of tokens added.
        """
        if isinstance(new_tokens, (list, tuple)):
            items = list(new_tokens)
        else:
            items = [new_tokens]
        count = 0
        for item in items:
            content, lstrip, rstrip, special = _added_token_fields(item)
            known = content in self._token_to_id or (len(content) == 1 and ord(content) < _NUM_BYTES)
            if not known:
                self._added.append((content, lstrip, rstrip, special or special_tokens))
                count += 1
        self._build_pattern()
        return count

    def add_special_tokens(
        self,
        special_tokens_dict: dict[str, Any],
        replace_extra_special_tokens: bool = True,
        *,
        replace_additional_special_tokens: bool | None = None,
    ) -> int:
        """Add extra special tokens: ``{"additional_special_tokens": [...]}`` (or ``"extra_special_tokens"``).

        New ones get the next ids (see ``add_tokens``) and are skipped by ``decode(skip_special_tokens=True)``.
        With ``replace_extra_special_tokens`` (transformers' default; ``replace_additional_special_tokens`` is
        its 4.x name) the list replaces the current one (the tokens keep their ids); else it is appended.
        Changing the six named tokens is not supported (``ValueError``). Returns the number of tokens added to
        the vocabulary.
        """
        if replace_additional_special_tokens is not None:
            replace_extra_special_tokens = replace_additional_special_tokens
        if not isinstance(special_tokens_dict, dict):
            raise TypeError(f"special_tokens_dict must be a dict, got {type(special_tokens_dict).__name__}")
        unknown = set(special_tokens_dict) - set(_EXTRA_SPECIAL_KEYS)
        if unknown:
            raise ValueError(
                f"add_special_tokens supports only the keys {_EXTRA_SPECIAL_KEYS}, got {sorted(unknown)}; "
                "the six named special tokens are set in the constructor"
            )
        count = 0
        for tokens in special_tokens_dict.values():
            if not isinstance(tokens, (list, tuple)):
                raise TypeError(f"additional special tokens must be a list, got {type(tokens).__name__}")
            contents = [_added_token_fields(token)[0] for token in tokens]
            count += self.add_tokens(list(tokens), special_tokens=True)
            kept = [] if replace_extra_special_tokens else self._additional_special
            self._additional_special = kept + [c for c in contents if c not in kept]
        return count

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_max_length={self.model_max_length}, "
            f"padding_side={self.padding_side!r}, truncation_side={self.truncation_side!r})"
        )

    def _bytes_to_ids(self, text: str) -> list[int]:
        if self.do_lower_case:
            text = text.lower()
        return [b + _NUM_SPECIAL_TOKENS for b in text.encode("utf-8")]

    def _text_to_ids(self, text: str, split_special_tokens: bool) -> list[int]:
        if split_special_tokens:
            return self._bytes_to_ids(text)
        ids: list[int] = []
        start = 0
        for match in self._special_pattern.finditer(text):
            ids.extend(self._bytes_to_ids(text[start : match.start()]))
            ids.append(int(match.lastgroup[1:]))
            start = match.end()
        ids.extend(self._bytes_to_ids(text[start:]))
        return ids

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_tensors: ReturnTensors | None = None,
        return_attention_mask: bool = True,
        split_special_tokens: bool | None = None,
        text_target: str | Sequence[str] | None = None,
    ) -> BatchEncoding:
        """Encode one text or a batch of texts.

        Args:
            text: a ``str``, or a list/tuple of ``str`` (a batch).
            padding: ``False``/``"do_not_pad"``; ``True``/``"longest"`` pads to the longest sequence of
                the batch; ``"max_length"`` pads to ``max_length`` (``model_max_length`` if it is None).
            truncation: ``True``/``"longest_first"``/``"only_first"`` cuts sequences to ``max_length``
                (special tokens included) on ``truncation_side``; ``False``/``"do_not_truncate"`` never
                cuts. ``None`` (default) truncates only when ``max_length`` is given and ``padding`` is
                ``False`` (not ``"do_not_pad"``, which keeps the whole text), as transformers does.
            max_length: target length, special tokens included; defaults to ``model_max_length`` when needed.
            add_special_tokens: wrap each text as ``[CLS] ... [SEP]`` (transformers) or not (DeepMind).
            return_tensors: ``None`` for Python lists, ``"pt"`` for int64 ``torch.Tensor``, ``"np"`` for int64
                ``np.ndarray``.
            return_attention_mask: also return ``attention_mask`` (1 for real tokens, 0 for padding).
            split_special_tokens: encode special-token strings in the text as bytes; ``None`` takes the
                setting given to ``__init__``.
            text_target: target text(s), encoded with the same options; their ``input_ids`` are returned as
                ``labels`` (or, when ``text`` is None, as ``input_ids`` with ``attention_mask``), as in
                transformers.

        Returns:
            ``BatchEncoding`` with ``input_ids`` (and ``attention_mask``). For a batch: ``batch`` lists (or a
            ``(batch, seq_len)`` tensor). For a single ``str``: one flat list, or a ``(1, seq_len)`` tensor.

        Raises:
            TypeError: a text is not a ``str`` (or neither ``text`` nor ``text_target`` is given).
            ValueError: invalid option; a sequence longer than ``max_length`` under ``padding="max_length"``
                without truncation; tensors requested for sequences of unequal length.
        """
        if text_target is not None:
            options = {
                "padding": padding,
                "truncation": truncation,
                "max_length": max_length,
                "add_special_tokens": add_special_tokens,
                "return_tensors": return_tensors,
                "split_special_tokens": split_special_tokens,
            }
            if text is None:
                return self(text_target, return_attention_mask=return_attention_mask, **options)
            encoding = self(text, return_attention_mask=return_attention_mask, **options)
            encoding["labels"] = self(text_target, return_attention_mask=False, **options)["input_ids"]
            return encoding
        if text is None:
            raise TypeError("text must be a str or a list of str, got NoneType; pass text, text_target or both")
        if isinstance(text, str):
            texts, batched = [text], False
        elif isinstance(text, (list, tuple)):
            if not text:
                raise ValueError("text is an empty batch; pass at least one str")
            texts, batched = list(text), True
            for i, item in enumerate(texts):
                if not isinstance(item, str):
                    raise TypeError(f"text[{i}] must be a str, got {type(item).__name__}")
        else:
            raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")

        if padding == "max_length":
            pad_to: str | None = "max_length"
        elif isinstance(padding, (bool, str)) and padding in _PADDING_STRATEGIES:
            pad_to = _PADDING_STRATEGIES[padding]
        else:
            raise ValueError(f"padding must be a bool, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if truncation is None:
            # transformers' rule, to the letter: the bool False, not "do_not_pad", lets max_length truncate.
            truncate = max_length is not None and padding is False
        elif isinstance(truncation, (bool, str)) and truncation in _TRUNCATION_STRATEGIES:
            truncate = _TRUNCATION_STRATEGIES[truncation]
        else:
            raise ValueError(
                "truncation must be a bool, None, 'longest_first', 'only_first' or 'do_not_truncate', "
                f"got {truncation!r}"
            )
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        if pad_to == "longest" and max_length is not None and not truncate:
            warnings.warn(
                f"max_length={max_length} is ignored when padding=True without truncation; "
                "use padding='max_length' to pad to max_length",
                stacklevel=2,
            )
        if max_length is None and (pad_to == "max_length" or truncate):
            max_length = self.model_max_length
        num_special = 2 if add_special_tokens else 0
        if truncate and max_length < num_special:
            raise ValueError(
                f"max_length={max_length} cannot hold the {num_special} special tokens [CLS] and [SEP]; "
                "raise max_length or pass add_special_tokens=False"
            )
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens

        sequences = []
        for body in (self._text_to_ids(t, split_special_tokens) for t in texts):
            if truncate and len(body) + num_special > max_length:
                keep = max_length - num_special
                body = body[len(body) - keep :] if self.truncation_side == "left" else body[:keep]
            sequences.append([self.cls_token_id, *body, self.sep_token_id] if add_special_tokens else body)

        if pad_to == "max_length":
            for seq in sequences:
                if len(seq) > max_length:
                    raise ValueError(
                        f"a sequence has {len(seq)} tokens, more than max_length={max_length}, and "
                        "truncation is off; pass truncation=True or a larger max_length"
                    )
            target = max_length
        elif pad_to == "longest":
            target = max(len(s) for s in sequences)
        else:
            target = 0

        input_ids, attention_mask = [], []
        for seq in sequences:
            n_pad = max(target - len(seq), 0)
            ones, zeros, pads = [1] * len(seq), [0] * n_pad, [self.pad_token_id] * n_pad
            if self.padding_side == "left":
                input_ids.append(pads + seq)
                attention_mask.append(zeros + ones)
            else:
                input_ids.append(seq + pads)
                attention_mask.append(ones + zeros)

        outputs = {"input_ids": input_ids}
        if return_attention_mask:
            outputs["attention_mask"] = attention_mask
        if return_tensors is not None:
            return BatchEncoding({k: _to_tensor(v, k, return_tensors) for k, v in outputs.items()})
        if not batched:
            return BatchEncoding({k: v[0] for k, v in outputs.items()})
        return BatchEncoding(outputs)

    def encode(
        self,
        text: str,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: ReturnTensors | None = None,
    ) -> list[int] | np.ndarray | torch.Tensor:
        """Ids of one text: ``seq_len`` ints, or a ``(1, seq_len)`` tensor when ``return_tensors`` is set."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        encoding = self(
            text,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
            return_tensors=return_tensors,
            return_attention_mask=False,
        )
        return encoding["input_ids"]

    def _check_id(self, token_id: Any) -> int:
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"token ids must be ints, got {type(token_id).__name__}")
        if not 0 <= token_id < len(self):
            raise ValueError(f"token id {int(token_id)} is outside the vocabulary [0, {len(self)})")
        return int(token_id)

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Token strings: a special token's text for ids 0-5, else ``chr(byte)`` (one Latin-1 char)."""
        if not isinstance(ids, (Sequence, np.ndarray, torch.Tensor)):
            return self._id_to_token(self._check_id(ids))
        special_ids = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(i) for i in map(self._check_id, np.asarray(ids).tolist()) if i not in special_ids]

    def _id_to_token(self, token_id: int) -> str:
        if token_id < _NUM_SPECIAL_TOKENS:
            return self.all_special_tokens[token_id]
        if token_id >= self.vocab_size:
            return self._added[token_id - self.vocab_size][0]
        return chr(token_id - _NUM_SPECIAL_TOKENS)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Inverse of ``convert_ids_to_tokens``: a special or added token's text or one char in U+0000-U+00FF."""
        if isinstance(tokens, str):
            if tokens in self._token_to_id:
                return self._token_to_id[tokens]
            if len(tokens) != 1 or ord(tokens) >= _NUM_BYTES:
                raise ValueError(f"{tokens!r} is neither a special token nor a single byte character")
            return ord(tokens) + _NUM_SPECIAL_TOKENS
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Text of tokens as ``convert_ids_to_tokens`` writes them; invalid UTF-8 becomes U+FFFD."""
        buffer = bytearray()
        for token in tokens:
            if token in self._token_to_id:
                buffer += token.encode("utf-8")
            else:
                buffer.append(self.convert_tokens_to_ids(token) - _NUM_SPECIAL_TOKENS)
        return buffer.decode("utf-8", errors="replace")

    def decode(
        self,
        token_ids: int | Sequence[int] | Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        skip_special_tokens: bool = False,
    ) -> str | list[str]:
        """Text of ids of shape ``(seq_len,)``, or a list of texts for a batch ``(batch, seq_len)``.

        Special tokens are written as their text (``"[CLS]"``) unless ``skip_special_tokens``; byte
        sequences that are not valid UTF-8 become U+FFFD, as in transformers.
        """
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.detach().cpu().numpy()
        if isinstance(token_ids, np.ndarray):
            token_ids = token_ids.tolist()
        if not isinstance(token_ids, (list, tuple, range)):
            token_ids = [token_ids]
        if token_ids and isinstance(token_ids[0], (list, tuple, np.ndarray, torch.Tensor)):
            return [self.decode(seq, skip_special_tokens=skip_special_tokens) for seq in token_ids]
        special_ids = set(self.all_special_ids) if skip_special_tokens else set()
        buffer = bytearray()
        for token_id in map(self._check_id, token_ids):
            if _NUM_SPECIAL_TOKENS <= token_id < self.vocab_size:
                buffer.append(token_id - _NUM_SPECIAL_TOKENS)
            elif token_id not in special_ids:
                buffer += self._id_to_token(token_id).encode("utf-8")
        return buffer.decode("utf-8", errors="replace")

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        skip_special_tokens: bool = False,
    ) -> list[str]:
        """Texts of a batch of id sequences, shape ``(batch, seq_len)``."""
        decoded = self.decode(sequences, skip_special_tokens=skip_special_tokens)
        return [decoded] if isinstance(decoded, str) else decoded

    def save_pretrained(self, save_directory: str | Path) -> tuple[str, ...]:
        """Write ``tokenizer_config.json`` and ``special_tokens_map.json`` (and ``added_tokens.json`` when tokens
        were added), loadable by transformers too. Returns the file paths.
        """
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"save_directory {str(directory)!r} is a file, expected a directory")
        directory.mkdir(parents=True, exist_ok=True)
        special = dict(zip(_SPECIAL_TOKEN_NAMES, self._special_to_id, strict=True))
        added_decoder = {
            str(i): _added_token_dict(token, special=False) for token, i in self._special_to_id.items()
        } | {
            str(self.vocab_size + i): _added_token_dict(content, lstrip, rstrip, special)
            for i, (content, lstrip, rstrip, special) in enumerate(self._added)
        }
        config = {
            **special,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "split_special_tokens": self.split_special_tokens,
            "tokenizer_class": "PerceiverTokenizer",
            "do_lower_case": self.do_lower_case,
            "added_tokens_decoder": added_decoder,
            "extra_special_tokens": self.additional_special_tokens,
        }
        files = [
            (TOKENIZER_CONFIG_FILE, config),
            (SPECIAL_TOKENS_MAP_FILE, {**special, "additional_special_tokens": self.additional_special_tokens}),
        ]
        if self._added:
            files.append((ADDED_TOKENS_FILE, self.added_tokens_encoder))
        paths = []
        for name, content in files:
            path = directory / name
            path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            paths.append(str(path))
        return tuple(paths)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> PerceiverTokenizer:
        """Load from a directory written by this class or transformers, or from a Hub repo id.

        Keyword arguments override the stored settings. Keys this tokenizer has no use for are ignored. Added
        tokens keep their stored ids (``added_tokens_decoder``/``added_tokens.json``, ids 262 and up without gaps).
        """
        source = Path(pretrained_model_name_or_path)
        if source.is_dir():
            config = _read_json(source / TOKENIZER_CONFIG_FILE)
            special_map = source / SPECIAL_TOKENS_MAP_FILE
            if special_map.is_file():
                special = _read_json(special_map)
                # The lists of extra special tokens in the two files are merged, not replaced.
                for key in _EXTRA_SPECIAL_KEYS:
                    special[key] = [*(config.get(key) or ()), *(special.get(key) or ())]
                config.update(special)
        else:
            config = _read_json(_hub_file(str(pretrained_model_name_or_path), TOKENIZER_CONFIG_FILE))
        settings = {key: config[key] for key in _CONFIG_KEYS if key in config}
        for name in _SPECIAL_TOKEN_NAMES:
            # transformers may store a token as a serialised AddedToken dict.
            if isinstance(settings.get(name), dict):
                settings[name] = settings[name]["content"]
        extra = [token for key in _EXTRA_SPECIAL_KEYS for token in config.get(key) or ()]
        settings["additional_special_tokens"] = [t for i, t in enumerate(extra) if t not in extra[:i]]
        settings.update(kwargs)
        additional = settings.pop("additional_special_tokens")
        tokenizer = cls(**settings)
        added = {int(i): token for i, token in (config.get("added_tokens_decoder") or {}).items()}
        added_file = source / ADDED_TOKENS_FILE
        if source.is_dir() and added_file.is_file():
            added |= {i: token for token, i in _read_json(added_file).items() if i not in added}
        for i in sorted(i for i in added if i >= tokenizer.vocab_size):
            if (
                tokenizer.add_tokens(added[i]) != 1
                or tokenizer.convert_tokens_to_ids(_added_token_fields(added[i])[0]) != i
            ):
                raise ValueError(
                    f"added token {added[i]!r} is stored with id {i}, but added tokens must take the ids "
                    f"{tokenizer.vocab_size}, {tokenizer.vocab_size + 1}, ... in order without repeats"
                )
        if additional:
            tokenizer.add_special_tokens({"additional_special_tokens": additional})
        return tokenizer


def _added_token_fields(token: Any) -> tuple[str, bool, bool, bool]:
    """``(content, lstrip, rstrip, special)`` of a str, an ``AddedToken``-like object or its JSON dict."""
    if isinstance(token, str):
        fields = {"content": token}
    elif isinstance(token, dict):
        # Older transformers tag serialised tokens with "__type": "AddedToken".
        fields = {key: value for key, value in token.items() if key != "__type"}
    elif isinstance(getattr(token, "content", None), str):
        fields = {name: getattr(token, name) for name in ("content", *_ADDED_TOKEN_FLAGS) if hasattr(token, name)}
    else:
        raise TypeError(f"a token must be a str or an AddedToken, got {type(token).__name__}")
    unknown = set(fields) - {"content", *_ADDED_TOKEN_FLAGS}
    if unknown:
        raise ValueError(f"token {fields['content']!r} has unknown fields {sorted(unknown)}")
    content = fields["content"]
    if not isinstance(content, str) or not content:
        raise ValueError(f"a token's content must be a non-empty str, got {content!r}")
    if fields.get("single_word"):
        raise ValueError(f"token {content!r}: single_word=True is not supported")
    # normalized has no effect: this tokenizer has no normalizer.
    return content, bool(fields.get("lstrip")), bool(fields.get("rstrip")), bool(fields.get("special"))


def _added_token_dict(content: str, lstrip: bool = False, rstrip: bool = False, special: bool = True) -> dict:
    """An added token as transformers serialises it in ``added_tokens_decoder``."""
    return {
        "content": content,
        "lstrip": lstrip,
        "normalized": not special,
        "rstrip": rstrip,
        "single_word": False,
        "special": special,
    }


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _hub_file(repo_id: str, filename: str) -> Path:
    """Download ``filename`` of a Hugging Face Hub repo (cached), needing the optional ``huggingface_hub``."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ImportError(
            f"{repo_id!r} is not a local directory and loading from the Hub needs huggingface_hub: "
            "pip install 'perceiver_io[hub]'"
        ) from e
    return Path(hf_hub_download(repo_id, filename))
