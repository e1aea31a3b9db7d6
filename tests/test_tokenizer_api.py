"""transformers' tokenizer interface on ``PerceiverTokenizer``: pairs, ``pad``, optional outputs, helpers.

Every expected value is transformers' ``PerceiverTokenizer`` on the same real text and arguments; the
departures (refusals where transformers ignores or mis-handles an argument) are checked to raise, naming the
value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_processing import TEXTS, assert_same_encoding

from perceiver_io.processing import PerceiverTokenizer
from perceiver_io.processing.tokenizer import AddedToken

transformers = pytest.importorskip("transformers")

QUESTION = "Which words are missing?"
PAIRS = [(TEXTS["ascii"], QUESTION), (TEXTS["non_ascii"], TEXTS["special_literal"]), (TEXTS["empty"], "x")]


@pytest.fixture(scope="module")
def ours() -> PerceiverTokenizer:
    return PerceiverTokenizer()


@pytest.fixture(scope="module")
def theirs():
    return transformers.PerceiverTokenizer()


OUTPUTS = {"return_token_type_ids": True, "return_special_tokens_mask": True, "return_length": True}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        OUTPUTS,
        {**OUTPUTS, "add_special_tokens": False},
        {**OUTPUTS, "padding": "max_length", "max_length": 96},
        {**OUTPUTS, "padding": True, "pad_to_multiple_of": 8},
        {"truncation": True, "max_length": 40, "return_token_type_ids": True},
        {"truncation": "only_first", "max_length": 40},
        {"truncation": "only_second", "max_length": 70, **OUTPUTS},
        {"padding": "max_length", "truncation": True, "max_length": 48, "return_tensors": "pt", **OUTPUTS},
        {"return_attention_mask": False, "padding_side": "left", "padding": "max_length", "max_length": 100},
    ],
    ids=repr,
)
def test_text_pair_matches_transformers(ours, theirs, kwargs):
    first, second = PAIRS[0]
    assert_same_encoding(ours(first, second, **kwargs), theirs(first, second, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": True, **OUTPUTS},
        {"padding": True, "pad_to_multiple_of": 16, "return_tensors": "np"},
        {"truncation": True, "max_length": 30, "padding": "max_length", "return_token_type_ids": True},
        {"truncation": "longest_first", "max_length": 12, "return_special_tokens_mask": True},
    ],
    ids=repr,
)
def test_batch_of_pairs_matches_transformers(ours, theirs, kwargs):
    firsts, seconds = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    expected = theirs(firsts, seconds, **kwargs)
    assert_same_encoding(ours(firsts, seconds, **kwargs), expected)
    assert_same_encoding(ours(PAIRS, **kwargs), theirs(PAIRS, **kwargs))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"truncation": True, "max_length": 20, "stride": 3},
        {"truncation": "only_first", "max_length": 16, "stride": 0, "add_special_tokens": False},
    ],
    ids=repr,
)
def test_overflowing_tokens_match_transformers(side, kwargs):
    ours = PerceiverTokenizer(truncation_side=side)
    theirs = transformers.PerceiverTokenizer(truncation_side=side)
    text = TEXTS["ascii"]
    options = {"return_overflowing_tokens": True, **kwargs}
    assert_same_encoding(ours(text, **options), theirs(text, **options))
    assert_same_encoding(
        ours(text, QUESTION, **{**options, "truncation": "only_second", "max_length": 70}),
        theirs(text, QUESTION, **{**options, "truncation": "only_second", "max_length": 70}),
    )
    # A batch where every text overflows (transformers fails on a batch where only some do).
    batch = [text, TEXTS["non_ascii"] * 4]
    assert_same_encoding(ours(batch, **options), theirs(batch, **options))


def test_overflow_in_part_of_a_batch_fills_empty(ours, theirs):
    kwargs = {"truncation": True, "max_length": 10, "return_overflowing_tokens": True}
    encoding = ours([TEXTS["ascii"], "short"], **kwargs)
    expected = theirs(TEXTS["ascii"], **kwargs)
    assert encoding["overflowing_tokens"] == [expected["overflowing_tokens"], []]
    assert encoding["num_truncated_tokens"] == [expected["num_truncated_tokens"], 0]
    assert encoding["input_ids"] == [expected["input_ids"], theirs("short")["input_ids"]]


def test_pad_to_multiple_of_matches_transformers(ours, theirs):
    for text in (TEXTS["empty"], TEXTS["ascii"], [TEXTS["ascii"], TEXTS["non_ascii"]]):
        for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 70}, {}):
            expected = theirs(text, pad_to_multiple_of=8, **kwargs)
            assert_same_encoding(ours(text, pad_to_multiple_of=8, **kwargs), expected)
    with pytest.raises(ValueError, match=r"max_length=12.*pad_to_multiple_of=8"):
        ours("This", padding=True, truncation=True, max_length=12, pad_to_multiple_of=8)


def test_pad_matches_transformers_and_data_collators(ours, theirs):
    """``pad`` on lists of encodings, as transformers' data collators call it, with each of its options."""
    texts = [TEXTS["ascii"], TEXTS["non_ascii"], TEXTS["empty"]]
    features = [ours(t, return_special_tokens_mask=True) for t in texts]
    assert features == [theirs(t, return_special_tokens_mask=True) for t in texts]
    for kwargs in (
        {},
        {"return_tensors": "pt"},
        {"padding": "max_length", "max_length": 80, "return_tensors": "np"},
        {"pad_to_multiple_of": 8, "padding_side": "left"},
        {"padding": False},
    ):
        assert_same_encoding(ours.pad([dict(f) for f in features], **kwargs), theirs.pad(features, **kwargs))
    without_mask = [{"input_ids": f["input_ids"]} for f in features]
    assert_same_encoding(
        ours.pad(without_mask, return_attention_mask=False), theirs.pad(without_mask, return_attention_mask=False)
    )
    # Departure: a given attention_mask is padded with the rest (transformers leaves it ragged under
    # return_attention_mask=False).
    assert ours.pad(features, return_attention_mask=False) == theirs.pad(features)
    # One encoding, and inputs given as tensors (the result keeps their kind).
    single = {"input_ids": [4, 10, 5], "token_type_ids": [0, 0, 0]}
    kwargs = {"padding": "max_length", "max_length": 6}
    assert_same_encoding(ours.pad(dict(single), **kwargs), theirs.pad(dict(single), **kwargs))
    tensors = [{"input_ids": torch.tensor(f["input_ids"])} for f in features]
    assert_same_encoding(ours.pad(tensors), theirs.pad(tensors))
    collated = {"input_ids": [f["input_ids"] for f in features]}
    assert_same_encoding(ours.pad(dict(collated)), theirs.pad(dict(collated)))


def test_data_collators_run_with_our_tokenizer(ours, theirs):
    torch.manual_seed(0)
    features = [ours(t) for t in (TEXTS["ascii"], TEXTS["non_ascii"])]
    padded = transformers.DataCollatorWithPadding(ours, pad_to_multiple_of=8)(features)
    assert_same_encoding(
        dict(padded), dict(transformers.DataCollatorWithPadding(theirs, pad_to_multiple_of=8)(features))
    )
    mlm_features = [ours(t, return_special_tokens_mask=True) for t in (TEXTS["ascii"], TEXTS["non_ascii"])]
    batch = {}
    for name, tokenizer in (("ours", ours), ("theirs", theirs)):
        torch.manual_seed(0)
        collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3, seed=None)
        batch[name] = collator([dict(f) for f in mlm_features])
    assert_same_encoding(dict(batch["ours"]), dict(batch["theirs"]))


def test_encode_positional_order_matches_transformers(ours, theirs):
    text = TEXTS["ascii"]
    assert ours.encode(text, QUESTION) == theirs.encode(text, QUESTION)
    assert ours.encode(text, None, False) == theirs.encode(text, None, False)
    assert ours.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False)
    kwargs = {"truncation": True, "max_length": 40, "return_tensors": "pt"}
    assert torch.equal(ours.encode(text, QUESTION, **kwargs), theirs.encode(text, QUESTION, **kwargs))
    assert ours.encode(text, split_special_tokens=True) == theirs.encode(text, split_special_tokens=True)


@pytest.mark.parametrize("name", list(TEXTS))
def test_tokenize_and_vocab_match_transformers(ours, theirs, name):
    assert ours.tokenize(TEXTS[name]) == theirs.tokenize(TEXTS[name])
    assert ours.tokenize(TEXTS[name], split_special_tokens=True) == theirs.tokenize(
        TEXTS[name], split_special_tokens=True
    )
    assert ours.convert_tokens_to_ids(ours.tokenize(TEXTS[name])) == ours.encode(
        TEXTS[name], add_special_tokens=False, verbose=False
    )


def test_special_token_helpers_match_transformers(ours, theirs):
    a, b = ours.encode(TEXTS["non_ascii"], add_special_tokens=False), ours.encode(QUESTION, add_special_tokens=False)
    for second in (None, b):
        assert ours.build_inputs_with_special_tokens(a, second) == theirs.build_inputs_with_special_tokens(a, second)
        assert ours.get_special_tokens_mask(a, second) == theirs.get_special_tokens_mask(a, second)
        assert ours.create_token_type_ids_from_sequences(a, second) == theirs.create_token_type_ids_from_sequences(
            a, second
        )
    finished = ours.encode(TEXTS["special_literal"], QUESTION)
    assert ours.get_special_tokens_mask(finished, already_has_special_tokens=True) == theirs.get_special_tokens_mask(
        finished, already_has_special_tokens=True
    )
    for pair in (False, True):
        assert ours.num_special_tokens_to_add(pair) == theirs.num_special_tokens_to_add(pair=pair)
    assert ours.max_len_single_sentence == theirs.max_len_single_sentence
    assert ours.max_len_sentences_pair == theirs.max_len_sentences_pair
    assert ours.pad_token_type_id == theirs.pad_token_type_id
    assert ours.unk_token is theirs.unk_token is None
    assert ours.special_tokens_map == theirs.special_tokens_map


@pytest.mark.parametrize("clean", [None, False, True])
def test_decode_clean_up_matches_transformers(ours, theirs, clean):
    ids = ours(["Hello , world ! I 'm here .", "It does n't , they 're"])["input_ids"]
    assert ours.decode(ids[0], clean_up_tokenization_spaces=clean) == theirs.decode(
        ids[0], clean_up_tokenization_spaces=clean
    )
    assert ours.batch_decode(ids, True, clean) == theirs.batch_decode(ids, True, clean)
    assert ours.batch_decode([]) == theirs.batch_decode([]) == []


def test_clean_up_setting_is_saved(tmp_path):
    PerceiverTokenizer(clean_up_tokenization_spaces=True).save_pretrained(tmp_path)
    for cls in (PerceiverTokenizer, transformers.PerceiverTokenizer):
        assert cls.from_pretrained(tmp_path).decode(ours_ids := [4, 78, 38, 50, 5]) == "[CLS]H,[SEP]", ours_ids


@pytest.mark.parametrize("token_cls", [AddedToken, "transformers"])
def test_named_special_token_as_added_token_matches_transformers(tmp_path, token_cls):
    cls = transformers.AddedToken if token_cls == "transformers" else token_cls
    new_eos = cls("[NEW_EOS]", lstrip=True, rstrip=False, normalized=False, special=True)
    theirs = transformers.PerceiverTokenizer(eos_token=transformers.AddedToken("[NEW_EOS]", lstrip=True))
    ours = PerceiverTokenizer(eos_token=new_eos)
    text = "a  [NEW_EOS] b [EOS]"
    assert_same_encoding(ours(text), theirs(text))
    assert ours.eos_token == "[NEW_EOS]" and ours.eos_token_id == 2
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    for loaded in (
        PerceiverTokenizer.from_pretrained(tmp_path / "ours"),
        PerceiverTokenizer.from_pretrained(tmp_path / "theirs"),
        transformers.PerceiverTokenizer.from_pretrained(tmp_path / "ours"),
    ):
        assert_same_encoding(loaded(text), theirs(text))
        assert str(loaded.added_tokens_decoder[2]) == "[NEW_EOS]"


def test_init_kwargs_hold_every_constructor_setting(tmp_path):
    tokenizer = PerceiverTokenizer(model_max_length=64, padding_side="left", do_lower_case=True)
    rebuilt = PerceiverTokenizer(**tokenizer.init_kwargs)
    assert rebuilt.init_kwargs == tokenizer.init_kwargs
    assert rebuilt("ABC", padding="max_length", max_length=8) == tokenizer("ABC", padding="max_length", max_length=8)


def test_tokenizer_kwargs_merge(ours, theirs):
    kwargs = {"tokenizer_kwargs": {"padding": "max_length", "max_length": 20}}
    assert_same_encoding(ours("ab", **kwargs), theirs("ab", **kwargs))
    with pytest.raises(ValueError, match="max_length is given as 10"):
        ours("ab", max_length=10, tokenizer_kwargs={"max_length": 20})


def test_long_sequence_warns_unless_quiet(ours):
    with pytest.warns(UserWarning, match=r"3902 ids, more than model_max_length=2048"):
        ours(TEXTS["long"])
    with pytest.warns(UserWarning, match="3902 ids"):
        ours([TEXTS["long"]], padding=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours(TEXTS["long"], verbose=False)
        ours(TEXTS["long"], truncation=True)


# --- departures: refusals where transformers ignores or mis-handles the argument -----------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        # transformers silently drops overflowing_tokens with return_tensors.
        (
            lambda t: t("abcdef", truncation=True, max_length=4, return_overflowing_tokens=True, return_tensors="pt"),
            ValueError,
            "return_tensors='pt'",
        ),
        # transformers raises the same for pairs under longest_first.
        (
            lambda t: t("ab", "cd", truncation=True, max_length=4, return_overflowing_tokens=True),
            ValueError,
            "longest_first",
        ),
        # transformers returns the whole 2-id text: only_first cannot cut [CLS] a [SEP] b [SEP] to 5 when b has 3.
        (lambda t: t("a", "bcd", truncation="only_first", max_length=5), ValueError, "second text alone"),
        (lambda t: t("abc", truncation="only_second", max_length=4), ValueError, "only_second"),
        (lambda t: t("a", max_target_length=3), ValueError, "max_target_length=3"),
        (lambda t: t(["a"], is_split_into_words=True), ValueError, "is_split_into_words"),
        (lambda t: t("a", return_offsets_mapping=True), ValueError, "return_offsets_mapping"),
        (lambda t: t("a", src_lang="en_XX"), TypeError, "src_lang"),
        (lambda t: t(["a", "b"], ["c"]), ValueError, "text_pair must be a list of 2"),
        (lambda t: t("a", ["c"]), TypeError, "text_pair must be a str"),
        (lambda t: t("a", pad_to_multiple_of=-8, padding=True), ValueError, "-8"),
        (lambda t: t("a", padding_side="up"), ValueError, "'up'"),
        (lambda t: t.tokenize("a", pair="b"), TypeError, "pair"),
        (lambda t: t.decode([4], spaces_between_special_tokens=False), TypeError, "spaces_between_special_tokens"),
        (lambda t: t.pad([{"attention_mask": [1]}]), ValueError, "'input_ids'"),
        (lambda t: t.pad({"input_ids": [[1, 2], [3]], "labels": [[1]]}), ValueError, "batch sizes"),
        (lambda t: t.get_special_tokens_mask([4], [5], already_has_special_tokens=True), ValueError, "token_ids_1"),
    ],
)
def test_departures_raise(ours, call, error, match):
    with pytest.raises(error, match=match):
        call(ours)


def test_named_special_tokens_cannot_be_reassigned():
    # transformers re-points the role (bos_token_id = 6 makes "\x00" the bos token); ours keeps ids 0-5.
    tokenizer = PerceiverTokenizer()
    for name in ("pad_token", "bos_token_id", "sep_token"):
        with pytest.raises(AttributeError, match=f"cannot set {name}"):
            setattr(tokenizer, name, None)
    assert tokenizer.bos_token == "[BOS]" and tokenizer.bos_token_id == 1


def test_constructor_keyword_naming_a_method_raises_attribute_error(tmp_path):
    PerceiverTokenizer().save_pretrained(tmp_path)
    for key in ("add_special_tokens", "get_vocab"):
        with pytest.raises(AttributeError, match=f"{key} conflicts with the method"):
            PerceiverTokenizer.from_pretrained(tmp_path, **{key: True})
    with pytest.raises(ValueError, match="single_word"):
        PerceiverTokenizer(eos_token=AddedToken("<e>", single_word=True))
    with pytest.raises(ValueError, match="eos_token"):
        PerceiverTokenizer(eos_token=np.int64(3))


def test_transformers_strategy_enums_are_accepted(ours, theirs):
    from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy

    kwargs = {"padding": PaddingStrategy.MAX_LENGTH, "truncation": TruncationStrategy.ONLY_FIRST, "max_length": 30}
    assert_same_encoding(ours(TEXTS["ascii"], QUESTION, **kwargs), theirs(TEXTS["ascii"], QUESTION, **kwargs))
    assert_same_encoding(ours.pad([ours("ab")], padding=PaddingStrategy.LONGEST), theirs.pad([theirs("ab")]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"add_special_tokens": False, "return_token_type_ids": True},
        {"truncation": "only_first", "max_length": 30, "stride": 2, "return_overflowing_tokens": True},
        {"truncation": True, "max_length": 30, **OUTPUTS},
        # (transformers fails on return_length with tensors unless prepend_batch_axis=True)
        {"padding": "max_length", "max_length": 100, "return_tensors": "pt", "prepend_batch_axis": True, **OUTPUTS},
        {"padding": "max_length", "max_length": 100, "return_tensors": "pt", "return_special_tokens_mask": True},
        {"padding": True, "pad_to_multiple_of": 8, "return_tensors": "np", "prepend_batch_axis": True},
        {"max_length": 20},  # truncation defaults to False here: max_length alone does not cut
    ],
    ids=repr,
)
def test_prepare_for_model_matches_transformers(ours, theirs, kwargs):
    ids = ours.encode(TEXTS["ascii"], add_special_tokens=False)
    pair_ids = ours.encode(QUESTION, add_special_tokens=False)
    pair = None if kwargs.get("return_overflowing_tokens") else pair_ids
    assert_same_encoding(ours.prepare_for_model(ids, pair, **kwargs), theirs.prepare_for_model(ids, pair, **kwargs))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second", "do_not_truncate"])
def test_truncate_sequences_matches_transformers(side, strategy):
    ours = PerceiverTokenizer(truncation_side=side)
    theirs = transformers.PerceiverTokenizer(truncation_side=side)
    ids = ours.encode(TEXTS["ascii"], add_special_tokens=False)
    pair_ids = ours.encode(QUESTION, add_special_tokens=False)
    for remove in (0, 5, 45):
        args = (ids, pair_ids, remove, strategy, 3)
        assert ours.truncate_sequences(*args) == theirs.truncate_sequences(*args)
    if strategy != "only_second":
        assert ours.truncate_sequences(ids, None, 7, strategy, 2) == theirs.truncate_sequences(
            ids, None, 7, strategy, 2
        )


def test_other_public_attributes_match_transformers(ours, theirs, tmp_path):
    assert ours.is_fast is theirs.is_fast is False
    assert list(ours.SPECIAL_TOKENS_ATTRIBUTES) == theirs.SPECIAL_TOKENS_ATTRIBUTES
    assert ours.save_vocabulary(str(tmp_path)) == theirs.save_vocabulary(str(tmp_path)) == ()
    assert ours.backend == theirs.backend
