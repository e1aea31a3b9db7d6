"""Byte-level UTF-8 tokenizer for Perceiver IO, equal in output to transformers' ``PerceiverTokenizer``.

Every UTF-8 byte ``b`` becomes id ``b + 6``; ids 0-5 are the special tokens ``[PAD] [BOS] [EOS] [MASK] [CLS]
[SEP]``, so the model's embedding table has 262 rows. Nothing here imports transformers.
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"

# Order fixes the ids: the n-th name gets id n.
_SPECIAL_TOKEN_NAMES = ("pad_token", "bos_token", "eos_token", "mask_token", "cls_token", "sep_token")
_DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
_NUM_SPECIAL_TOKENS = len(_SPECIAL_TOKEN_NAMES)
_NUM_BYTES = 256
_CONFIG_KEYS = (
    *_SPECIAL_TOKEN_NAMES,
    "model_max_length",
    "padding_side",
    "truncation_side",
    "split_special_tokens",
    "do_lower_case",
    "clean_up_tokenization_spaces",
)
# Both spellings of the list of extra special tokens: transformers 5 writes the first, earlier versions the second.
_EXTRA_SPECIAL_KEYS = ("extra_special_tokens", "additional_special_tokens")
_ADDED_TOKEN_FLAGS = ("lstrip", "rstrip", "single_word", "normalized", "special")
# transformers' clean_up_tokenization: spaces a word tokenizer's decoder leaves before punctuation and contractions.
_CLEAN_UP_REPLACEMENTS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)

_PADDING_STRATEGIES = {
    False: None,
    "do_not_pad": None,
    True: "longest",
    "longest": "longest",
    "max_length": "max_length",
}
_TRUNCATION_STRATEGIES = {
    False: None,
    "do_not_truncate": None,
    True: "longest_first",
    "longest_first": "longest_first",
    "only_first": "only_first",
    "only_second": "only_second",
}
# Padding value of each per-token key that ``pad`` extends (transformers' ``_pad``); other keys are left as given.
_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}

ReturnTensors = Literal["pt", "np"]


class AddedToken:
    """A token with its matching flags, as transformers' (``tokenizers``') ``AddedToken``; ``str()`` is its text.

    ``lstrip``/``rstrip`` absorb the whitespace left/right of the token. ``single_word=True`` is refused by the
    tokenizer; ``normalized`` has no effect (this tokenizer has no normaliser). ``special`` marks a special token.
    """

    def __init__(
        self,
        content: str,
        single_word: bool = False,
        lstrip: bool = False,
        rstrip: bool = False,
        normalized: bool | None = None,
        special: bool = False,
    ) -> None:
        if not isinstance(content, str) or not content:
            raise ValueError(f"content must be a non-empty str, got {content!r}")
        self.content = content
        self.single_word = single_word
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.special = special
        self.normalized = not special if normalized is None else normalized

    def __str__(self) -> str:
        return self.content

    def __repr__(self) -> str:
        return (
            f'AddedToken("{self.content}", rstrip={self.rstrip}, lstrip={self.lstrip}, '
            f"single_word={self.single_word}, normalized={self.normalized}, special={self.special})"
        )

    def __eq__(self, other: object) -> bool:
        fields = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
        return all(getattr(self, f) == getattr(other, f, None) for f in fields)

    def __hash__(self) -> int:
        return hash(self.content)


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


def _to_tensor(value: Any, key: str, return_tensors: str) -> np.ndarray | torch.Tensor:
    """int64 tensor of equal-length rows ``(batch, seq_len)``, one sequence ``(seq_len,)``, one int per example
    ``(batch,)`` (``length``) or one int ``()``."""
    lengths = sorted({len(r) for r in value if isinstance(r, list)}) if isinstance(value, list) else []
    if len(lengths) > 1:
        raise ValueError(
            f"cannot stack '{key}' into one tensor: sequence lengths differ ({lengths}); "
            "pass padding=True or padding='max_length'"
        )
    array = np.asarray(value, dtype=np.int64)
    return torch.from_numpy(array) if return_tensors == "pt" else array


def _as_lists(value: Any) -> Any:
    """A tensor or array as (nested) Python lists; lists of them element-wise; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def _tensor_kind(value: Any) -> str | None:
    """``"pt"``/``"np"`` when ``value`` (or its first element) is a tensor/array, else None."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, torch.Tensor):
        return "pt"
    if isinstance(value, np.ndarray):
        return "np"
    return None


def _fixed_special_token(index: int, as_id: bool) -> property:
    """Read-only attribute for one of the six named special tokens (its text, or its fixed id ``index``)."""
    name = _SPECIAL_TOKEN_NAMES[index] + ("_id" if as_id else "")

    def get(self: PerceiverTokenizer) -> str | int:
        return index if as_id else self._specials[index][0]

    def refuse(self: PerceiverTokenizer, value: Any) -> None:
        raise AttributeError(
            f"cannot set {name} to {value!r}: the six special tokens keep the ids 0-5 the model was trained with; "
            f"pass {_SPECIAL_TOKEN_NAMES[index]}=... to the constructor or from_pretrained to change its text"
        )

    doc = f"Id of the {_SPECIAL_TOKEN_NAMES[index]}, {index}." if as_id else f"Text of the token with id {index}."
    return property(get, refuse, doc=doc)


class _EncodeOptions(NamedTuple):
    """``__call__``'s options, checked once and shared by every example of a batch."""

    add_special_tokens: bool
    pad_to: str | None  # None, "longest" or "max_length"
    truncation: str | None  # None, "longest_first", "only_first" or "only_second"
    max_length: int | None
    stride: int
    pad_to_multiple_of: int | None
    padding_side: str
    return_tensors: str | None
    return_token_type_ids: bool
    return_attention_mask: bool
    return_overflowing_tokens: bool
    return_special_tokens_mask: bool
    return_length: bool
    verbose: bool
    split_special_tokens: bool


class PerceiverTokenizer:
    """UTF-8 byte tokenizer with six special tokens, drop-in for transformers' ``PerceiverTokenizer``.

    With ``add_special_tokens=True`` (transformers' default) a text becomes ``[CLS] bytes... [SEP]`` and a text
    pair ``[CLS] a [SEP] b [SEP]``; DeepMind's original masked-LM pipeline adds no special tokens: use
    ``add_special_tokens=False``.

    As in transformers, the literal strings of the special tokens (``"[MASK]"`` ...) inside a text are
    encoded as the special ids, not as their bytes; ``split_special_tokens=True`` encodes them as bytes.

    Deliberate departures from transformers (each only where transformers gives an unusable result or silently
    ignores an argument):

    - ``vocab_size`` is 262, the number of ids (transformers reports 256, the byte count; its ``len()``
      is 262).
    - ``padding="max_length"`` with truncation off and a sequence longer than ``max_length`` raises
      ``ValueError``; transformers silently returns the longer, unpadded sequence.
    - Truncating to a ``max_length`` below the number of special tokens (2, or 3 for a pair), any ``max_length``
      below 1, or so that the text that may not be cut (``only_first``/``only_second``) alone exceeds it, raises
      ``ValueError``; transformers returns sequences longer than ``max_length``. ``truncation="only_second"``
      without a text pair raises ``ValueError`` (transformers silently does not truncate).
    - A non-``str`` text raises ``TypeError`` (transformers: ``ValueError``); decoding an id outside
      ``[0, len(tokenizer))`` raises ``ValueError``.
    - ``do_lower_case=True`` lowercases the text (special and added tokens are matched first, as written);
      transformers stores the flag but encodes the text unchanged.
    - Added tokens (``add_tokens``, ``add_special_tokens``, ``additional_special_tokens=``) take ids 262 and up
      as in transformers; ``single_word`` tokens are not supported. The six named special tokens keep ids 0-5:
      their text (and ``lstrip``/``rstrip``, given as ``AddedToken``) is set in the constructor, and assigning
      ``tokenizer.pad_token``/``pad_token_id``... raises ``AttributeError`` (transformers re-points the role).
    - Pre-tokenized input raises: ``is_split_into_words=True`` (transformers joins the words without spaces,
      ``["Hello", "world"]`` encodes ``"Helloworld"``) and lists of tokens or ids given as a text.
      ``return_offsets_mapping=True`` raises too (transformers' Python tokenizer ignores it).
    - ``return_overflowing_tokens=True`` with ``return_tensors`` raises ``ValueError`` (transformers silently
      drops the overflowing tokens); in a batch where only some texts overflow, the others get
      ``overflowing_tokens=[]`` and ``num_truncated_tokens=0`` (transformers fails on an assertion).
    - Keyword arguments this tokenizer has no use for raise ``TypeError`` (transformers ignores most of them,
      e.g. ``src_lang``); ``max_target_length`` without ``text_target`` raises ``ValueError``.
    - ``tokenize(text, pair=..., add_special_tokens=...)``: transformers' Python tokenizer ignores both; ours
      raises ``TypeError``. ``tokenizer_kwargs`` repeating a keyword with another value raises ``ValueError``
      (transformers' documentation and code disagree on which wins).
    - ``pad`` pads a given ``attention_mask`` even with ``return_attention_mask=False`` (transformers leaves it
      ragged).
    - A sequence longer than ``model_max_length`` gets a ``UserWarning`` (``warnings``), where transformers logs on
      its ``"transformers"`` logger.
    """

    model_input_names = ("input_ids", "attention_mask")
    # The named special-token roles, as transformers lists them (unk_token is None here: every byte has an id).
    SPECIAL_TOKENS_ATTRIBUTES = (
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    )
    # A Python tokenizer, not one of the tokenizers library (transformers' "fast" ones).
    is_fast = False
    # Perceiver has no unknown token: every byte has an id.
    unk_token = None
    unk_token_id = None
    # Keyword arguments given to the constructor as positional ones: none (all are recorded in init_kwargs).
    init_inputs = ()
    # transformers' name for a tokenizer implemented in Python, not by the tokenizers or sentencepiece libraries.
    backend = "custom"
    pad_token_type_id = 0
    pad_token = _fixed_special_token(0, as_id=False)
    bos_token = _fixed_special_token(1, as_id=False)
    eos_token = _fixed_special_token(2, as_id=False)
    mask_token = _fixed_special_token(3, as_id=False)
    cls_token = _fixed_special_token(4, as_id=False)
    sep_token = _fixed_special_token(5, as_id=False)
    pad_token_id = _fixed_special_token(0, as_id=True)
    bos_token_id = _fixed_special_token(1, as_id=True)
    eos_token_id = _fixed_special_token(2, as_id=True)
    mask_token_id = _fixed_special_token(3, as_id=True)
    cls_token_id = _fixed_special_token(4, as_id=True)
    sep_token_id = _fixed_special_token(5, as_id=True)

    def __init__(
        self,
        pad_token: str | AddedToken = "[PAD]",
        bos_token: str | AddedToken = "[BOS]",
        eos_token: str | AddedToken = "[EOS]",
        mask_token: str | AddedToken = "[MASK]",
        cls_token: str | AddedToken = "[CLS]",
        sep_token: str | AddedToken = "[SEP]",
        model_max_length: int = 2048,
        padding_side: Literal["right", "left"] = "right",
        truncation_side: Literal["right", "left"] = "right",
        split_special_tokens: bool = False,
        do_lower_case: bool = False,
        clean_up_tokenization_spaces: bool = False,
        additional_special_tokens: Sequence[Any] = (),
        **unknown: Any,
    ) -> None:
        """The named special tokens are a ``str`` or an ``AddedToken`` (transformers' or ours; its ``lstrip``
        and ``rstrip`` apply); their ids are fixed (0-5) whatever their text. Unknown keywords raise
        ``TypeError``, and those naming a method (``get_vocab=...``) ``AttributeError``, as in transformers.
        """
        for key in unknown:
            if callable(getattr(type(self), key, None)):
                raise AttributeError(f"{key} conflicts with the method {key} in {type(self).__name__}")
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}")
        tokens = (pad_token, bos_token, eos_token, mask_token, cls_token, sep_token)
        specials = []
        for name, token in zip(_SPECIAL_TOKEN_NAMES, tokens, strict=True):
            try:
                content, lstrip, rstrip, _ = _added_token_fields(token)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{name} must be a non-empty str or an AddedToken, got {token!r}: {e}") from None
            specials.append((content, lstrip, rstrip))
        contents = tuple(content for content, _, _ in specials)
        if len(set(contents)) != len(contents):
            raise ValueError(f"special tokens must be distinct, got {contents}")
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("right", "left"):
                raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
        if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 1:
            raise ValueError(f"model_max_length must be a positive int, got {model_max_length!r}")
        for name, flag in (("do_lower_case", do_lower_case), ("split_special_tokens", split_special_tokens)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if not isinstance(clean_up_tokenization_spaces, bool):
            raise TypeError(
                f"clean_up_tokenization_spaces must be a bool, got {type(clean_up_tokenization_spaces).__name__}"
            )
        self._specials: list[tuple[str, bool, bool]] = specials
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.split_special_tokens = split_special_tokens
        self.do_lower_case = do_lower_case
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        # Added tokens, id 262 + position: (content, lstrip, rstrip, special).
        self._added: list[tuple[str, bool, bool, bool]] = []
        self._additional_special: list[str] = []
        self._build_pattern()
        if additional_special_tokens:
            self.add_special_tokens({"additional_special_tokens": additional_special_tokens})

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """The constructor's arguments for this tokenizer's present settings (a fresh dict), as transformers'
        ``init_kwargs``; the named special tokens as ``AddedToken``."""
        return {
            **{
                name: AddedToken(c, lstrip=l, rstrip=r)
                for name, (c, l, r) in zip(_SPECIAL_TOKEN_NAMES, self._specials, strict=True)
            },
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "split_special_tokens": self.split_special_tokens,
            "do_lower_case": self.do_lower_case,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "additional_special_tokens": self.additional_special_tokens,
        }

    def _named_specials(self) -> list[tuple[str, tuple[str, bool, bool]]]:
        """``(role, (content, lstrip, rstrip))`` of the six special tokens in id order."""
        return list(zip(_SPECIAL_TOKEN_NAMES, self._specials, strict=True))

    def _build_pattern(self) -> None:
        """The regex matching every special and added token; ``lastgroup`` names the matched token's id."""
        entries = [(c, i, l, r) for i, (c, l, r) in enumerate(self._specials)]
        entries += [(c, _NUM_SPECIAL_TOKENS + _NUM_BYTES + i, l, r) for i, (c, l, r, _) in enumerate(self._added)]
        self._token_to_id = {entry[0]: entry[1] for entry in entries}
        # Longest first so that a token which is a prefix of another cannot win the match.
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
        alternatives = [
            ("\\s*" if lstrip else "") + f"(?P<t{i}>{re.escape(token)})" + ("\\s*" if rstrip else "")
            for token, i, lstrip, rstrip in entries
        ]
        self._special_pattern = re.compile("|".join(alternatives))

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
        return [content for content, _, _ in self._specials] + self._additional_special

    @property
    def all_special_ids(self) -> list[int]:
        """The six special ids ``[0, 1, 2, 3, 4, 5]``, then those of the additional special tokens."""
        return list(range(_NUM_SPECIAL_TOKENS)) + [self._token_to_id[t] for t in self._additional_special]

    @property
    def special_tokens_map(self) -> dict[str, str | list[str]]:
        """The named special tokens by role (``{"pad_token": "[PAD]", ...}``), and the extra ones if any."""
        named: dict[str, str | list[str]] = {
            n: c for n, (c, _, _) in zip(_SPECIAL_TOKEN_NAMES, self._specials, strict=True)
        }
        if self._additional_special:
            named["extra_special_tokens"] = self.additional_special_tokens
        return named

    @property
    def additional_special_tokens(self) -> list[str]:
        """Extra special tokens (``add_special_tokens({"additional_special_tokens": ...})``), a fresh list."""
        return list(self._additional_special)

    @property
    def extra_special_tokens(self) -> list[str]:
        """transformers 5's name for ``additional_special_tokens``."""
        return self.additional_special_tokens

    @property
    def extra_special_tokens_ids(self) -> list[int]:
        """Ids of ``extra_special_tokens``."""
        return [self._token_to_id[t] for t in self._additional_special]

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """The six special tokens (ids 0-5) and the added tokens (262 and up) by content, as transformers'."""
        return {token: self._token_to_id[token] for token in self._all_added_contents()}

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        """The six special tokens (ids 0-5) and the added tokens (262 and up) as ``AddedToken`` by id."""
        decoder = {i: AddedToken(c, lstrip=l, rstrip=r) for i, (c, l, r) in enumerate(self._specials)}
        for i, (content, lstrip, rstrip, special) in enumerate(self._added):
            decoder[self.vocab_size + i] = AddedToken(content, lstrip=lstrip, rstrip=rstrip, special=special)
        return decoder

    def _all_added_contents(self) -> list[str]:
        return [c for c, _, _ in self._specials] + [c for c, *_ in self._added]

    def get_added_vocab(self) -> dict[str, int]:
        """Same as ``added_tokens_encoder`` (transformers' name)."""
        return self.added_tokens_encoder

    def get_vocab(self) -> dict[str, int]:
        """Token text to id: ``chr(byte)`` -> ``byte + 6`` for the 256 bytes, then the special and added tokens."""
        vocab = {chr(b): b + _NUM_SPECIAL_TOKENS for b in range(_NUM_BYTES)}
        vocab.update(self.added_tokens_encoder)
        return vocab

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
                self._token_to_id[content] = len(self) - 1
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

    # --- special-token layout (transformers' public helpers) -------------------------------------------------

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Special tokens around one text (2: ``[CLS] [SEP]``) or a pair (3: ``[CLS] a [SEP] b [SEP]``)."""
        return 3 if pair else 2

    @property
    def max_len_single_sentence(self) -> int:
        """Longest text that fits ``model_max_length`` with its special tokens."""
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        """Longest pair (both texts together) that fits ``model_max_length`` with its special tokens."""
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``[CLS] ids_0 [SEP]``, or ``[CLS] ids_0 [SEP] ids_1 [SEP]`` for a pair."""
        if token_ids_1 is None:
            return [self.cls_token_id, *token_ids_0, self.sep_token_id]
        return [self.cls_token_id, *token_ids_0, self.sep_token_id, *token_ids_1, self.sep_token_id]

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """Segment ids of ``build_inputs_with_special_tokens``' output: 0 for ``[CLS] ids_0 [SEP]``, 1 for
        ``ids_1 [SEP]`` (transformers' ``bert_style``)."""
        first = [0] * (len(token_ids_0) + 2)
        return first if token_ids_1 is None else first + [1] * (len(token_ids_1) + 1)

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where ``build_inputs_with_special_tokens`` puts a special token, 0 on the texts' ids.

        With ``already_has_special_tokens``, ``token_ids_0`` is a finished sequence and every special id in it
        (``all_special_ids``) is marked; ``token_ids_1`` must then be None (``ValueError``).
        """
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if token_id in special else 0 for token_id in token_ids_0]
        mask = [1, *([0] * len(token_ids_0)), 1]
        return mask if token_ids_1 is None else [*mask, *([0] * len(token_ids_1)), 1]

    # --- text to ids ---------------------------------------------------------------------------------------

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

    def tokenize(self, text: str, split_special_tokens: bool | None = None) -> list[str]:
        """Tokens of ``text`` without ``[CLS]``/``[SEP]``: special and added tokens as their text, every other
        UTF-8 byte as ``chr(byte)`` (``"é"`` -> ``["Ã", "©"]``), as transformers' ``tokenize``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        return [self._id_to_token(i) for i in self._text_to_ids(text, split_special_tokens)]

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        text_pair: str | Sequence[str] | None = None,
        text_target: str | Sequence[str] | None = None,
        text_pair_target: str | Sequence[str] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: Literal["right", "left"] | None = None,
        return_tensors: ReturnTensors | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        tokenizer_kwargs: dict[str, Any] | None = None,
        split_special_tokens: bool | None = None,
        max_target_length: int | None = None,
    ) -> BatchEncoding:
        """Encode one text, a text pair, or a batch of texts or pairs (transformers' ``__call__``).

        Args:
            text: a ``str``, or a list/tuple of ``str`` (a batch); a batch may also hold ``(text, pair)`` tuples.
            text_pair: second text(s) of pairs: a ``str`` for a ``str`` text, a list of the batch's length.
            text_target, text_pair_target: target text(s), encoded with the same options; their ``input_ids``
                are returned as ``labels`` (or, when ``text`` is None, as the encoding itself).
            add_special_tokens: wrap as ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` (transformers) or not
                (DeepMind).
            padding: ``False``/``"do_not_pad"``; ``True``/``"longest"`` pads to the longest sequence of
                the batch; ``"max_length"`` pads to ``max_length`` (``model_max_length`` if it is None).
            truncation: ``True``/``"longest_first"`` cuts the longer text of a pair first, one id at a time;
                ``"only_first"``/``"only_second"`` cut only that text; ``False``/``"do_not_truncate"`` never
                cuts. Sequences are cut to ``max_length`` (special tokens included) on ``truncation_side``.
                ``None`` (default) truncates (``longest_first``) only when ``max_length`` is given and
                ``padding`` is ``False`` (not ``"do_not_pad"``, which keeps the whole text), as transformers does.
            max_length: target length, special tokens included; defaults to ``model_max_length`` when needed.
            stride: with ``return_overflowing_tokens``, how many kept ids the overflow repeats before the cut.
            is_split_into_words: only ``False`` (pre-tokenized input is not supported).
            pad_to_multiple_of: round the padded length up to a multiple of this (needs ``padding``; as in
                transformers it has no effect without padding, and with truncation ``max_length`` must be a
                multiple of it).
            padding_side: ``"right"``/``"left"`` for this call; None takes ``self.padding_side``.
            return_tensors: ``None`` for Python lists, ``"pt"`` for int64 ``torch.Tensor``, ``"np"`` for int64
                ``np.ndarray``.
            return_token_type_ids: also return ``token_type_ids`` (0 for the first text and its special tokens,
                1 for the second text and its ``[SEP]``); None means False (Perceiver has no segment input).
            return_attention_mask: also return ``attention_mask`` (1 for real tokens, 0 for padding); None
                means True.
            return_overflowing_tokens: also return ``overflowing_tokens`` (the cut ids, plus ``stride`` kept
                ones) and ``num_truncated_tokens`` for each truncated sequence; not with ``return_tensors``, nor
                for pairs under ``longest_first`` (``ValueError``, as in transformers).
            return_special_tokens_mask: also return ``special_tokens_mask`` (1 on added special tokens and
                padding, 0 on the texts' ids).
            return_offsets_mapping: only ``False`` (not supported by a byte tokenizer here).
            return_length: also return ``length``, the number of ids (after padding for a single text, before
                padding for a batch, as transformers does).
            verbose: ``False`` silences the warnings about an ignored ``max_length`` and about a sequence longer
                than ``model_max_length`` (transformers logs both).
            tokenizer_kwargs: more of these keyword arguments as a dict; a keyword given both ways with
                different values raises ``ValueError``.
            split_special_tokens: encode special-token strings in the text as bytes; ``None`` takes the
                setting given to ``__init__``.
            max_target_length: ``max_length`` for ``text_target``.

        Returns:
            ``BatchEncoding`` with ``input_ids`` (and ``attention_mask``, ...). For a batch: ``batch`` lists (or
            a ``(batch, seq_len)`` tensor). For a single text or pair: one flat list, or a ``(1, seq_len)``
            tensor.

        Raises:
            TypeError: a text is not a ``str`` (or neither ``text`` nor ``text_target`` is given).
            ValueError: invalid option; a sequence longer than ``max_length`` under ``padding="max_length"``
                without truncation; tensors requested for sequences of unequal length.
        """
        if tokenizer_kwargs is not None:
            arguments = {
                "text": text,
                "text_pair": text_pair,
                "text_target": text_target,
                "text_pair_target": text_pair_target,
                "add_special_tokens": add_special_tokens,
                "padding": padding,
                "truncation": truncation,
                "max_length": max_length,
                "stride": stride,
                "is_split_into_words": is_split_into_words,
                "pad_to_multiple_of": pad_to_multiple_of,
                "padding_side": padding_side,
                "return_tensors": return_tensors,
                "return_token_type_ids": return_token_type_ids,
                "return_attention_mask": return_attention_mask,
                "return_overflowing_tokens": return_overflowing_tokens,
                "return_special_tokens_mask": return_special_tokens_mask,
                "return_offsets_mapping": return_offsets_mapping,
                "return_length": return_length,
                "verbose": verbose,
                "split_special_tokens": split_special_tokens,
                "max_target_length": max_target_length,
            }
            return self(**_merge_tokenizer_kwargs(arguments, tokenizer_kwargs))
        if is_split_into_words:
            raise ValueError("is_split_into_words=True: pre-tokenized input is not supported; pass the text as a str")
        if return_offsets_mapping:
            raise ValueError("return_offsets_mapping=True is not supported (transformers' Python tokenizer ignores it)")
        if text is None and text_target is None:
            raise TypeError("text must be a str or a list of str, got NoneType; pass text, text_target or both")
        if max_target_length is not None and text_target is None:
            raise ValueError(f"max_target_length={max_target_length!r} applies only with text_target")
        inputs = _examples(text, text_pair) if text is not None else None
        targets = _examples(text_target, text_pair_target) if text_target is not None else None
        examples = [example for given in (inputs, targets) if given is not None for example in given[0]]
        options = self._encode_options(
            all_pairs=all(second is not None for _, second in examples),
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_tensors=return_tensors,
            return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask,
            return_length=return_length,
            verbose=verbose,
            split_special_tokens=split_special_tokens,
        )
        if targets is None:
            return self._encode(*inputs, options)
        target_options = options
        if max_target_length is not None:
            _check_max_length(max_target_length, "max_target_length")
            target_options = options._replace(max_length=max_target_length)
        target_encoding = self._encode(*targets, target_options)
        if inputs is None:
            return target_encoding
        encoding = self._encode(*inputs, options)
        encoding["labels"] = target_encoding["input_ids"]
        return encoding

    def _encode_options(
        self,
        *,
        all_pairs: bool,
        add_special_tokens: bool,
        padding: bool | str,
        truncation: bool | str | None,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        return_tensors: str | None,
        return_token_type_ids: bool | None,
        return_attention_mask: bool | None,
        return_overflowing_tokens: bool,
        return_special_tokens_mask: bool,
        return_length: bool,
        verbose: bool,
        split_special_tokens: bool | None,
    ) -> _EncodeOptions:
        """Check ``__call__``'s options and resolve their defaults as transformers does."""
        pad_to = _padding_strategy(padding)
        if truncation is None:
            # transformers' rule, to the letter: the bool False, not "do_not_pad", lets max_length truncate.
            strategy = "longest_first" if max_length is not None and padding is False else None
        elif isinstance(truncation, (bool, str)) and truncation in _TRUNCATION_STRATEGIES:
            strategy = _TRUNCATION_STRATEGIES[truncation]
        else:
            raise ValueError(
                "truncation must be a bool, None, 'longest_first', 'only_first', 'only_second' or "
                f"'do_not_truncate', got {truncation!r}"
            )
        if strategy == "only_second" and not all_pairs:
            raise ValueError("truncation='only_second' needs text pairs; use 'only_first' or True for single texts")
        if max_length is not None:
            _check_max_length(max_length, "max_length")
        for name, count in (("stride", stride), ("pad_to_multiple_of", pad_to_multiple_of)):
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                raise ValueError(f"{name} must be a non-negative int, got {count!r}")
        if pad_to_multiple_of == 0:
            raise ValueError("pad_to_multiple_of must be a positive int or None, got 0")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        if padding_side not in (None, "right", "left"):
            raise ValueError(f"padding_side must be None, 'right' or 'left', got {padding_side!r}")
        if return_overflowing_tokens and return_tensors is not None:
            raise ValueError(
                f"return_overflowing_tokens=True cannot be combined with return_tensors={return_tensors!r}: "
                "overflowing tokens differ in length (transformers drops them silently); pass return_tensors=None"
            )
        if verbose and pad_to == "longest" and max_length is not None and strategy is None:
            warnings.warn(
                f"max_length={max_length} is ignored when padding=True without truncation; "
                "use padding='max_length' to pad to max_length",
                stacklevel=3,
            )
        if max_length is None and (pad_to == "max_length" or strategy is not None):
            max_length = self.model_max_length
        if strategy is not None and pad_to is not None and pad_to_multiple_of and max_length % pad_to_multiple_of:
            raise ValueError(
                f"truncation and padding are both on, but the truncation length max_length={max_length} is not a "
                f"multiple of pad_to_multiple_of={pad_to_multiple_of}"
            )
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        return _EncodeOptions(
            add_special_tokens=add_special_tokens,
            pad_to=pad_to,
            truncation=strategy,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side or self.padding_side,
            return_tensors=return_tensors,
            return_token_type_ids=bool(return_token_type_ids),
            return_attention_mask=True if return_attention_mask is None else return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask,
            return_length=return_length,
            verbose=verbose,
            split_special_tokens=split_special_tokens,
        )

    def _encode(self, examples: list[tuple[str, str | None]], batched: bool, options: _EncodeOptions) -> BatchEncoding:
        """Encode, pad and convert one text (pair) or a batch of them (``_examples``' output)."""
        rows = [self._encode_example(first, second, options) for first, second in examples]
        self._warn_if_too_long(max(len(row["input_ids"]) for row in rows), options)
        if any("overflowing_tokens" in row for row in rows):
            for row in rows:
                row.setdefault("overflowing_tokens", [])
                row.setdefault("num_truncated_tokens", 0)
        if options.return_length and batched:
            for row in rows:
                row["length"] = len(row["input_ids"])
        rows = self._pad_rows(
            rows,
            options.pad_to,
            options.max_length,
            options.pad_to_multiple_of,
            options.padding_side,
            options.return_attention_mask,
        )
        if options.return_length and not batched:
            rows[0]["length"] = len(rows[0]["input_ids"])
        outputs = {key: [row[key] for row in rows] for key in rows[0]}
        if options.return_tensors is not None:
            return BatchEncoding({k: _to_tensor(v, k, options.return_tensors) for k, v in outputs.items()})
        if not batched:
            return BatchEncoding({k: v[0] for k, v in outputs.items()})
        return BatchEncoding(outputs)

    def _warn_if_too_long(self, length: int, options: _EncodeOptions) -> None:
        """Warn (unless ``verbose=False``) when an uncut sequence exceeds ``model_max_length``, as transformers."""
        if options.verbose and options.max_length is None and length > self.model_max_length:
            warnings.warn(
                f"a sequence has {length} ids, more than model_max_length={self.model_max_length}; the model "
                "cannot take it whole (pass truncation=True to cut it)",
                stacklevel=4,
            )

    def _encode_example(self, first: str, second: str | None, options: _EncodeOptions) -> dict[str, Any]:
        """Unpadded ids (and the requested per-token keys) of one text or text pair."""
        ids = self._text_to_ids(first, options.split_special_tokens)
        pair_ids = self._text_to_ids(second, options.split_special_tokens) if second is not None else None
        return self._prepare_ids(ids, pair_ids, options)

    def _prepare_ids(self, ids: list[int], pair_ids: list[int] | None, options: _EncodeOptions) -> dict[str, Any]:
        """Truncate one id sequence (pair), add the special tokens and the requested per-token keys; no padding."""
        pair = pair_ids is not None
        num_special = self.num_special_tokens_to_add(pair) if options.add_special_tokens else 0
        if options.return_overflowing_tokens and options.truncation == "longest_first" and pair:
            raise ValueError(
                "Not possible to return overflowing tokens for pair of sequences with the `longest_first`. "
                "Please select another truncation strategy than `longest_first`, for instance `only_second` or "
                "`only_first`."
            )
        if options.truncation is not None and options.max_length < num_special:
            raise ValueError(
                f"max_length={options.max_length} cannot hold the {num_special} special tokens; "
                "raise max_length or pass add_special_tokens=False"
            )
        total = len(ids) + len(pair_ids or ()) + num_special
        overflow: list[int] = []
        if options.truncation is not None and total > options.max_length:
            ids, pair_ids, overflow = self.truncate_sequences(
                ids, pair_ids, total - options.max_length, options.truncation, options.stride
            )
        if options.add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids, pair_ids)
        else:
            sequence = ids + (pair_ids or [])
        if options.truncation is not None and len(sequence) > options.max_length:
            kept = "first" if options.truncation == "only_second" else "second"
            raise ValueError(
                f"truncation={options.truncation!r} cannot cut the sequence to max_length={options.max_length}: "
                f"the {kept} text alone is too long ({len(sequence)} ids remain); use truncation='longest_first'"
            )
        row: dict[str, Any] = {"input_ids": sequence}
        if options.return_token_type_ids:
            row["token_type_ids"] = (
                self.create_token_type_ids_from_sequences(ids, pair_ids)
                if options.add_special_tokens
                else [0] * len(sequence)
            )
        if options.return_special_tokens_mask:
            row["special_tokens_mask"] = (
                self.get_special_tokens_mask(ids, pair_ids) if options.add_special_tokens else [0] * len(sequence)
            )
        if options.return_overflowing_tokens and overflow:
            row["overflowing_tokens"] = overflow
            row["num_truncated_tokens"] = total - options.max_length
        return row

    def truncate_sequences(
        self,
        ids: list[int],
        pair_ids: list[int] | None = None,
        num_tokens_to_remove: int = 0,
        truncation_strategy: str = "longest_first",
        stride: int = 0,
    ) -> tuple[list[int], list[int] | None, list[int]]:
        """Remove ``num_tokens_to_remove`` ids on ``truncation_side``, as transformers' ``truncate_sequences``.

        ``"longest_first"`` takes ids from the longer sequence of a pair until both are equally long, then from
        both alternately; ``"only_first"``/``"only_second"`` from that sequence alone; ``"do_not_truncate"`` from
        none. Returns ``(ids, pair_ids, overflowing)``: the overflow is the removed ids plus up to ``stride`` kept
        neighbours, for one cut sequence (empty for a pair under ``"longest_first"``, as in transformers).
        ``"only_second"`` without ``pair_ids`` raises ``ValueError`` (transformers returns the ids uncut).
        """
        known = isinstance(truncation_strategy, (bool, str)) and truncation_strategy in _TRUNCATION_STRATEGIES
        strategy = _TRUNCATION_STRATEGIES[truncation_strategy] if known else "unknown"
        if strategy == "unknown":
            raise ValueError(
                "truncation_strategy must be 'longest_first', 'only_first', 'only_second' or 'do_not_truncate', "
                f"got {truncation_strategy!r}"
            )
        if strategy == "only_second" and pair_ids is None:
            raise ValueError("truncation_strategy='only_second' needs pair_ids")
        if strategy is None or num_tokens_to_remove <= 0:
            return ids, pair_ids, []
        left = self.truncation_side == "left"
        if strategy == "longest_first" and pair_ids is not None:
            first_remove = min(abs(len(pair_ids) - len(ids)), num_tokens_to_remove)
            rest = num_tokens_to_remove - first_remove
            if len(ids) > len(pair_ids):
                remove_first, remove_second = first_remove + rest // 2, rest - rest // 2
            else:
                remove_first, remove_second = rest // 2, first_remove + rest - rest // 2
            return _cut(ids, remove_first, left), _cut(pair_ids, remove_second, left), []
        if strategy == "only_second":
            pair_ids, overflow = _cut_with_overflow(pair_ids, num_tokens_to_remove, stride, left)
            return ids, pair_ids, overflow
        ids, overflow = _cut_with_overflow(ids, num_tokens_to_remove, stride, left)
        return ids, pair_ids, overflow

    def prepare_for_model(
        self,
        ids: list[int],
        pair_ids: list[int] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = False,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: Literal["right", "left"] | None = None,
        return_tensors: ReturnTensors | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        prepend_batch_axis: bool = False,
    ) -> BatchEncoding:
        """``__call__`` on ids already encoded (without special tokens): truncate, add the special tokens, pad.

        Options as in ``__call__`` (``truncation`` defaults to False here, as in transformers). With
        ``return_tensors``, values are ``(seq_len,)`` tensors, or ``(1, seq_len)`` with ``prepend_batch_axis``.
        Ids outside ``[0, len(tokenizer))`` raise ``ValueError``.
        """
        ids = [self._check_id(i) for i in ids]
        pair_ids = None if pair_ids is None else [self._check_id(i) for i in pair_ids]
        options = self._encode_options(
            all_pairs=pair_ids is not None,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_tensors=return_tensors,
            return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask,
            return_length=return_length,
            verbose=verbose,
            split_special_tokens=None,
        )
        row = self._prepare_ids(ids, pair_ids, options)
        self._warn_if_too_long(len(row["input_ids"]), options)
        (row,) = self._pad_rows(
            [row],
            options.pad_to,
            options.max_length,
            options.pad_to_multiple_of,
            options.padding_side,
            options.return_attention_mask,
        )
        if return_length:
            row["length"] = len(row["input_ids"])
        if prepend_batch_axis:
            row = {key: [value] for key, value in row.items()}
        if return_tensors is not None:
            row = {key: _to_tensor(value, key, return_tensors) for key, value in row.items()}
        return BatchEncoding(row)

    def _pad_rows(
        self,
        rows: list[dict[str, Any]],
        pad_to: str | None,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        padding_side: str,
        return_attention_mask: bool,
    ) -> list[dict[str, Any]]:
        """Pad each example's ``input_ids`` (with ``[PAD]``) and its per-token keys to the common length."""
        lengths = [len(row["input_ids"]) for row in rows]
        if pad_to == "longest":
            target = max(lengths)
        elif pad_to == "max_length":
            target = max_length
        else:
            target = None
        if target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        if pad_to == "max_length" and max(lengths) > target:
            raise ValueError(
                f"a sequence has {max(lengths)} tokens, more than max_length={target}, and "
                "truncation is off; pass truncation=True or a larger max_length"
            )
        padded = []
        for row, length in zip(rows, lengths, strict=True):
            row = dict(row)
            if return_attention_mask and "attention_mask" not in row:
                row["attention_mask"] = [1] * length
            n_pad = 0 if target is None else target - length
            for key, value in {"input_ids": self.pad_token_id, **_PAD_VALUES}.items():
                if key in row and n_pad:
                    pads = [value] * n_pad
                    row[key] = pads + list(row[key]) if padding_side == "left" else list(row[key]) + pads
            padded.append(row)
        return padded

    def pad(
        self,
        encoded_inputs: Any,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: Literal["right", "left"] | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: ReturnTensors | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad encodings to a common length, as transformers' ``pad`` (what its data collators call).

        ``encoded_inputs``: one encoding (a dict of per-token lists, ``input_ids`` required), a dict of batch lists,
        or a list of encodings (a batch). Values may be lists, ``np.ndarray`` or ``torch.Tensor``; with tensors and
        ``return_tensors=None`` the result has the same kind. ``input_ids`` are padded with ``[PAD]`` (0),
        ``attention_mask`` with 0 (created when missing unless ``return_attention_mask=False``),
        ``token_type_ids`` with 0 and ``special_tokens_mask`` with 1; other keys are kept as given. A given
        ``attention_mask`` is padded even with ``return_attention_mask=False`` (transformers leaves it unpadded).
        ``padding``, ``max_length``, ``pad_to_multiple_of``, ``padding_side`` and ``return_tensors`` are as in
        ``__call__``; ``verbose`` is accepted for transformers' signature (``pad`` has no warning to silence).
        """
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], Mapping):
            keys = list(encoded_inputs[0])
            encoded_inputs = {key: [example[key] for example in encoded_inputs] for key in keys}
        if not isinstance(encoded_inputs, Mapping):
            raise TypeError(
                f"encoded_inputs must be a dict of model inputs or a list of them, got {type(encoded_inputs).__name__}"
            )
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"encoded_inputs must include 'input_ids', got the keys {list(encoded_inputs)}")
        pad_to = _padding_strategy(padding)
        if max_length is not None:
            _check_max_length(max_length, "max_length")
        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
        if padding_side not in (None, "right", "left"):
            raise ValueError(f"padding_side must be None, 'right' or 'left', got {padding_side!r}")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        if return_tensors is None:
            return_tensors = _tensor_kind(encoded_inputs["input_ids"])
        features = {key: _as_lists(value) for key, value in encoded_inputs.items()}
        input_ids = features["input_ids"]
        batched = bool(input_ids) and isinstance(input_ids[0], list)
        if not batched:
            features = {key: [value] for key, value in features.items()}
        sizes = {key: len(value) for key, value in features.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every key must hold one entry per example, got the batch sizes {sizes}")
        rows = [{key: value[i] for key, value in features.items()} for i in range(sizes["input_ids"])]
        if max_length is None and pad_to == "max_length":
            max_length = self.model_max_length
        rows = self._pad_rows(
            rows,
            pad_to,
            max_length,
            pad_to_multiple_of,
            padding_side or self.padding_side,
            True if return_attention_mask is None else return_attention_mask,
        )
        outputs: dict[str, Any] = {key: [row[key] for row in rows] for key in rows[0]}
        if not batched:
            outputs = {key: value[0] for key, value in outputs.items()}
        if return_tensors is not None:
            outputs = {key: _to_tensor(value, key, return_tensors) for key, value in outputs.items()}
        return BatchEncoding(outputs)

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        padding_side: Literal["right", "left"] | None = None,
        return_tensors: ReturnTensors | None = None,
        **kwargs: Any,
    ) -> list[int] | np.ndarray | torch.Tensor:
        """Ids of one text or text pair: ``seq_len`` ints, or a ``(1, seq_len)`` tensor when ``return_tensors``
        is set. Arguments (and further keywords of ``__call__`` such as ``split_special_tokens``) as in
        ``__call__``, in transformers' positional order."""
        for name, value in (("text", text), ("text_pair", text_pair)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        encoding = self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            padding_side=padding_side,
            return_tensors=return_tensors,
            **{"return_attention_mask": False, **kwargs},
        )
        return encoding["input_ids"]

    # --- ids to text ---------------------------------------------------------------------------------------

    def _check_id(self, token_id: Any) -> int:
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"token ids must be ints, got {type(token_id).__name__}")
        if not 0 <= token_id < len(self):
            raise ValueError(f"token id {int(token_id)} is outside the vocabulary [0, {len(self)})")
        return int(token_id)

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Token strings: a special or added token's text, else ``chr(byte)`` (one Latin-1 char)."""
        if not isinstance(ids, (Sequence, np.ndarray, torch.Tensor)):
            return self._id_to_token(self._check_id(ids))
        special_ids = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(i) for i in map(self._check_id, np.asarray(ids).tolist()) if i not in special_ids]

    def _id_to_token(self, token_id: int) -> str:
        if token_id < _NUM_SPECIAL_TOKENS:
            return self._specials[token_id][0]
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

    def clean_up_tokenization(self, text: str) -> str:
        """Remove the space before punctuation and English contractions (``" ."`` -> ``"."``, ``" n't"`` ->
        ``"n't"`` ...), as transformers' ``clean_up_tokenization``."""
        for spaced, joined in _CLEAN_UP_REPLACEMENTS:
            text = text.replace(spaced, joined)
        return text

    def decode(
        self,
        token_ids: int | Sequence[int] | Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str | list[str]:
        """Text of ids of shape ``(seq_len,)``, or a list of texts for a batch ``(batch, seq_len)``.

        Special tokens are written as their text (``"[CLS]"``) unless ``skip_special_tokens``; byte
        sequences that are not valid UTF-8 become U+FFFD, as in transformers. ``clean_up_tokenization_spaces``
        applies ``clean_up_tokenization``; None takes the constructor's setting (default False).
        """
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.detach().cpu().numpy()
        if isinstance(token_ids, np.ndarray):
            token_ids = token_ids.tolist()
        if not isinstance(token_ids, (list, tuple, range)):
            token_ids = [token_ids]
        if token_ids and isinstance(token_ids[0], (list, tuple, np.ndarray, torch.Tensor)):
            return [self.decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in token_ids]
        special_ids = set(self.all_special_ids) if skip_special_tokens else set()
        buffer = bytearray()
        for token_id in map(self._check_id, token_ids):
            if _NUM_SPECIAL_TOKENS <= token_id < self.vocab_size:
                buffer.append(token_id - _NUM_SPECIAL_TOKENS)
            elif token_id not in special_ids:
                buffer += self._id_to_token(token_id).encode("utf-8")
        text = buffer.decode("utf-8", errors="replace")
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        """Texts of a batch of id sequences, shape ``(batch, seq_len)``; an empty batch gives ``[]``."""
        if len(sequences) == 0:
            return []
        decoded = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces)
        return [decoded] if isinstance(decoded, str) else decoded

    def save_vocabulary(self, save_directory: str | Path, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write no file and return ``()``: the byte vocabulary is fixed (transformers' Perceiver does the same);
        added tokens are saved by ``save_pretrained``."""
        return ()

    def save_pretrained(self, save_directory: str | Path) -> tuple[str, ...]:
        """Write ``tokenizer_config.json`` and ``special_tokens_map.json`` (and ``added_tokens.json`` when tokens
        were added), loadable by transformers too. Returns the file paths.
        """
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"save_directory {str(directory)!r} is a file, expected a directory")
        directory.mkdir(parents=True, exist_ok=True)
        special = {name: content for name, (content, _, _) in zip(_SPECIAL_TOKEN_NAMES, self._specials, strict=True)}
        added_decoder = {
            str(i): _added_token_dict(content, lstrip, rstrip, special=False)
            for i, (content, lstrip, rstrip) in enumerate(self._specials)
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
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "added_tokens_decoder": added_decoder,
            "extra_special_tokens": self.additional_special_tokens,
        }
        files = [
            (TOKENIZER_CONFIG_FILE, config),
            (SPECIAL_TOKENS_MAP_FILE, {**special, "additional_special_tokens": self.additional_special_tokens}),
        ]
        if self._added:
            added_vocab = {c: i for c, i in self.added_tokens_encoder.items() if i >= self.vocab_size}
            files.append((ADDED_TOKENS_FILE, added_vocab))
        paths = []
        for name, content in files:
            path = directory / name
            path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            paths.append(str(path))
        return tuple(paths)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> PerceiverTokenizer:
        """Load from a directory written by this class or transformers, or from a Hub repo id.

        Keyword arguments override the stored settings (unknown ones raise, as in the constructor); keys of the
        stored files this tokenizer has no use for are ignored. Added
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
        decoder = config.get("added_tokens_decoder") or {}
        for index, name in enumerate(_SPECIAL_TOKEN_NAMES):
            # The flags (lstrip, rstrip) of a named token live in added_tokens_decoder, under its fixed id.
            content = _added_token_fields(settings.get(name, _DEFAULT_SPECIAL_TOKENS[index]))[0]
            stored = decoder.get(str(index))
            if isinstance(stored, dict) and stored.get("content") == content:
                settings[name] = stored
        extra = [token for key in _EXTRA_SPECIAL_KEYS for token in config.get(key) or ()]
        settings["additional_special_tokens"] = [t for i, t in enumerate(extra) if t not in extra[:i]]
        settings.update(kwargs)
        additional = settings.pop("additional_special_tokens")
        tokenizer = cls(**settings)
        added = {int(i): token for i, token in decoder.items()}
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


def _check_max_length(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _padding_strategy(padding: Any) -> str | None:
    """None, ``"longest"`` or ``"max_length"`` for transformers' spellings of ``padding`` (its ``PaddingStrategy``
    members are ``str`` and compare equal to these)."""
    if isinstance(padding, (bool, str)) and padding in _PADDING_STRATEGIES:
        return _PADDING_STRATEGIES[padding]
    raise ValueError(f"padding must be a bool, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")


def _examples(text: Any, text_pair: Any) -> tuple[list[tuple[str, str | None]], bool]:
    """``[(text, pair or None), ...]`` and whether the input was a batch; a batch may hold ``(text, pair)``
    tuples, as in transformers."""
    if isinstance(text, str):
        if text_pair is not None and not isinstance(text_pair, str):
            raise TypeError(f"text_pair must be a str when text is a str, got {type(text_pair).__name__}")
        return [(text, text_pair)], False
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
    if not text:
        raise ValueError("text is an empty batch; pass at least one str")
    if text_pair is None:
        pairs: list[Any] = [None] * len(text)
    elif isinstance(text_pair, (list, tuple)) and len(text_pair) == len(text):
        pairs = list(text_pair)
    else:
        raise ValueError(f"text_pair must be a list of {len(text)} str, one per text of the batch, got {text_pair!r}")
    examples = []
    for i, (item, pair) in enumerate(zip(text, pairs, strict=True)):
        if (
            isinstance(item, (list, tuple))
            and pair is None
            and len(item) == 2
            and all(isinstance(t, str) for t in item)
        ):
            item, pair = item
        if not isinstance(item, str):
            raise TypeError(f"text[{i}] must be a str or a (text, text_pair) tuple of str, got {type(item).__name__}")
        if pair is not None and not isinstance(pair, str):
            raise TypeError(f"text_pair[{i}] must be a str, got {type(pair).__name__}")
        examples.append((item, pair))
    return examples, True


def _cut(ids: list[int], count: int, left: bool) -> list[int]:
    """``ids`` without ``count`` ids on the left or right end."""
    return ids[count:] if left else ids[: max(len(ids) - count, 0)]


def _cut_with_overflow(ids: list[int], count: int, stride: int, left: bool) -> tuple[list[int], list[int]]:
    """``_cut`` and the overflow: the removed ids plus up to ``stride`` kept ones next to the cut."""
    window = min(len(ids), stride + count)
    overflow = ids[:window] if left else ids[len(ids) - window :]
    return _cut(ids, count, left), overflow


def _merge_tokenizer_kwargs(arguments: dict[str, Any], extra: Any) -> dict[str, Any]:
    """``__call__``'s arguments updated with ``tokenizer_kwargs``; a keyword given both ways must agree."""
    if not isinstance(extra, dict):
        raise TypeError(f"tokenizer_kwargs must be a dict, got {type(extra).__name__}")
    defaults = {name: p.default for name, p in inspect.signature(PerceiverTokenizer.__call__).parameters.items()}
    merged = dict(arguments)
    for key, value in extra.items():
        if key not in arguments:
            raise TypeError(f"tokenizer_kwargs has the unexpected keyword {key!r}")
        if arguments[key] is not defaults[key] and arguments[key] != value:
            raise ValueError(f"{key} is given as {arguments[key]!r} and in tokenizer_kwargs as {value!r}; give it once")
        merged[key] = value
    return merged
