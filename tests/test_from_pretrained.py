"""from_pretrained's transformers keywords, checked against transformers' from_pretrained on the same folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import SMALL_CONFIGS, randomize_, small_inputs

import perceiver_io
from perceiver_io import PerceiverConfig, PerceiverModel
from perceiver_io.adapters.text import TextPreprocessor
from perceiver_io.heads import classification_decoder

CLS = "PerceiverForSequenceClassification"
FINAL = "perceiver.decoder.decoder.final_layer"


def _saved(folder: Path, head: str = CLS, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomize_(getattr(perceiver_io, head)(PerceiverConfig.from_dict({**SMALL_CONFIGS[head], **overrides})))
    model.save_pretrained(folder)
    return model


def _info(info: dict) -> dict:
    return {k: sorted(v) if isinstance(v, set) else v for k, v in info.items()}


def test_num_labels_override_needs_ignore_mismatched_sizes(tmp_path, transformers_module):
    saved = _saved(tmp_path, num_labels=5)
    with pytest.raises(
        ValueError, match=rf"(?s){FINAL}.bias: checkpoint \(5,\) vs model \(3,\).*ignore_mismatched_sizes=True"
    ):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    with pytest.warns(UserWarning, match=rf"(?s)2 mis-shaped and initialised afresh.*{FINAL}.weight"):
        model, info = perceiver_io.PerceiverForSequenceClassification.from_pretrained(
            tmp_path, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True
        )
    _, ref_info = transformers_module.PerceiverForSequenceClassification.from_pretrained(
        tmp_path, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert _info(info) == _info(ref_info)
    assert model.config.num_labels == 3 and model(**small_inputs(CLS)).logits.shape == (2, 3)
    ours, before = model.state_dict(), saved.state_dict()
    fresh = {f"perceiver.decoder.final.{p}" for p in ("weight", "bias")}
    assert all(torch.equal(ours[k], before[k]) for k in ours if k not in fresh)
    # the fresh layer follows init_weights' rule: zero bias, fan-in truncated normal within ±2σ
    weight, scale = ours["perceiver.decoder.final.weight"], SMALL_CONFIGS[CLS]["d_latents"] ** -0.5
    assert torch.equal(ours["perceiver.decoder.final.bias"], torch.zeros(3))
    assert weight.abs().max() <= 2 * scale and 0.5 * scale < weight.std() < 1.5 * scale


def test_exact_load_reports_nothing_and_matches_transformers(tmp_path, transformers_module):
    saved = _saved(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, info = perceiver_io.PerceiverForSequenceClassification.from_pretrained(
            tmp_path, output_loading_info=True
        )
    _, ref_info = transformers_module.PerceiverForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert (
        _info(info)
        == _info(ref_info)
        == {
            "missing_keys": [],
            "unexpected_keys": [],
            "mismatched_keys": [],
            "error_msgs": [],
        }
    )
    inputs = small_inputs(CLS)
    assert torch.equal(model(**inputs).logits, saved(**inputs).logits)
    assert not model.training and model.config.name_or_path == str(tmp_path)


def test_other_heads_checkpoint_loads_like_transformers(tmp_path, transformers_module):
    """transformers' fine-tuning pattern: a masked-LM checkpoint into a sequence classifier."""
    mlm = _saved(tmp_path, "PerceiverForMaskedLM")
    with pytest.warns(UserWarning, match=r"(?s)holds a PerceiverForMaskedLM, loaded as .*newly initialised.*unused"):
        model, info = perceiver_io.PerceiverForSequenceClassification.from_pretrained(
            tmp_path, output_loading_info=True
        )
    _, ref_info = transformers_module.PerceiverForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert _info(info) == _info(ref_info)
    assert info["missing_keys"] and info["unexpected_keys"]
    shared = [k for k in mlm.state_dict() if k.startswith(("perceiver.encoder.", "perceiver.input_preprocessor."))]
    assert shared and all(torch.equal(model.state_dict()[k], mlm.state_dict()[k]) for k in shared)


def test_bare_model_from_a_heads_folder(tmp_path, transformers_module):
    head = _saved(tmp_path)
    config = PerceiverConfig.from_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor of the head has its place in this composition
        bare = PerceiverModel.from_pretrained(
            tmp_path, input_preprocessor=TextPreprocessor(config), decoder=classification_decoder(config)
        )
    inputs = small_inputs(CLS)
    assert torch.equal(bare(inputs["inputs"], inputs["attention_mask"]).logits, head(**inputs).logits)
    # without the ends, the encoder loads and the rest is reported unused, with the file's names (transformers')
    with pytest.warns(UserWarning, match="unused checkpoint"):
        encoder_only, info = PerceiverModel.from_pretrained(tmp_path, output_loading_info=True)
    _, ref_info = transformers_module.PerceiverModel.from_pretrained(tmp_path, output_loading_info=True)
    assert _info(info) == _info(ref_info)
    assert torch.equal(encoder_only.encoder.latents, head.perceiver.encoder.latents)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['decodr'\]"):
        PerceiverModel.from_pretrained(tmp_path, decodr=None)


def test_config_argument(tmp_path):
    _saved(tmp_path)
    config = PerceiverConfig.from_pretrained(tmp_path)
    config.output_hidden_states = True
    model = perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, config=config)
    assert model.config.output_hidden_states is True and model.config is not config
    from_folder = perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, config=tmp_path)
    assert from_folder.config.num_labels == 3
    with pytest.raises(TypeError, match=r"config keys \['num_labels'\] were passed along with config="):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, config=config, num_labels=4)
    with pytest.raises(TypeError, match="config must be a PerceiverConfig"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, config={"num_labels": 3})


def test_config_overrides_and_unknown_keywords(tmp_path):
    _saved(tmp_path)
    labels = {0: "neg", 1: "neutral", 2: "pos"}
    model = perceiver_io.PerceiverForSequenceClassification.from_pretrained(
        tmp_path, id2label=labels, output_attentions=True, problem_type="single_label_classification"
    )
    assert model.config.id2label == labels and model.config.label2id["pos"] == 2
    assert model.config.output_attentions is True
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['attn_impl'\]"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, attn_impl="eager")
    with pytest.raises(ValueError, match="local path; token, revision apply only to hub ids"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, revision="main", token="x")


@pytest.mark.parametrize("dtype", ["bfloat16", torch.float16, "auto"])
def test_dtype(dtype, tmp_path, transformers_module):
    saved = _saved(tmp_path)
    model = perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, dtype=dtype)
    ref = transformers_module.PerceiverForSequenceClassification.from_pretrained(tmp_path, dtype=dtype)
    assert model.dtype == ref.dtype == model.config.dtype
    assert {p.dtype for p in model.parameters()} == {model.dtype}
    expected = {k: v.to(model.dtype) for k, v in saved.state_dict().items()}
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items() if v.is_floating_point())


def test_dtype_auto_reads_the_config_then_the_checkpoint(tmp_path, transformers_module):
    _saved(tmp_path / "f32").to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"  # as transformers
    shutil.copytree(tmp_path / "bf16", tmp_path / "no-dtype")
    config = json.loads((tmp_path / "no-dtype" / "config.json").read_text())
    del config["dtype"]  # "auto" then falls back to the weights' own dtype
    (tmp_path / "no-dtype" / "config.json").write_text(json.dumps(config))
    for folder in ("bf16", "no-dtype"):
        for kwargs in ({}, {"dtype": "auto"}, {"torch_dtype": "auto"}):
            model = perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path / folder, **kwargs)
            ref = transformers_module.PerceiverForSequenceClassification.from_pretrained(tmp_path / folder, **kwargs)
            assert model.dtype == ref.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="disagree"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(
            tmp_path / "f32", dtype="float16", torch_dtype="bfloat16"
        )
    with pytest.raises(ValueError, match="dtype='int8' is not a floating torch dtype"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path / "f32", dtype="int8")


def test_one_device(tmp_path):
    _saved(tmp_path)
    load = perceiver_io.PerceiverForSequenceClassification.from_pretrained
    cpu = torch.device("cpu")
    for kwargs in (
        {"device_map": "cpu"},
        {"device_map": cpu},
        {"device_map": {"": "cpu"}},
        {"device": "cpu"},
        {"device_map": "auto"} if not torch.cuda.is_available() else {"device": cpu},
    ):
        assert load(tmp_path, **kwargs).device == cpu, kwargs
    with pytest.raises(ValueError, match="spreads the model over"):
        load(tmp_path, device_map={"perceiver.encoder": "cpu", "perceiver.decoder": "cuda:0"})
    with pytest.raises(ValueError, match="spreads a model over devices"):
        load(tmp_path, device_map="balanced")
    with pytest.raises(ValueError, match="device_map or device, not both"):
        load(tmp_path, device_map="cpu", device="cpu")
    with pytest.raises(ValueError, match="meta"):
        load(tmp_path, device="meta")


def _hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = "a" * 40) -> Path:
    """huggingface_hub's cache layout: blobs named by content hash, a snapshot of symlinks, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo


def test_hub_id_from_offline_cache(tmp_path, monkeypatch, transformers_module):
    import huggingface_hub

    saved = _saved(tmp_path / "model")
    cache = tmp_path / "cache"
    _hub_cache(cache, "deepmind/tiny-perceiver", tmp_path / "model")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    inputs = small_inputs(CLS)
    model = perceiver_io.PerceiverForSequenceClassification.from_pretrained("deepmind/tiny-perceiver", cache_dir=cache)
    ref = transformers_module.PerceiverForSequenceClassification.from_pretrained(
        "deepmind/tiny-perceiver", cache_dir=cache
    )
    assert torch.equal(model(**inputs).logits, saved(**inputs).logits)
    torch.testing.assert_close(model(**inputs).logits, ref(**inputs).logits, rtol=1e-5, atol=1e-5)
    assert model.config.name_or_path == "deepmind/tiny-perceiver"
    pinned = perceiver_io.PerceiverForSequenceClassification.from_pretrained(
        "deepmind/tiny-perceiver", cache_dir=cache, revision="a" * 40, local_files_only=True
    )
    assert torch.equal(pinned(**inputs).logits, saved(**inputs).logits)
    assert PerceiverConfig.from_pretrained("deepmind/tiny-perceiver", cache_dir=cache).num_labels == 3
    # the default cache (HF_HUB_CACHE) is huggingface_hub's, read when it is imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert (
        perceiver_io.PerceiverForSequenceClassification.from_pretrained("deepmind/tiny-perceiver").config.num_labels
        == 3
    )
    with pytest.raises(OSError, match=r"could not fetch 'deepmind/tiny-perceiver'"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained("deepmind/tiny-perceiver", revision="v2")
    with pytest.raises(OSError, match=r"could not fetch 'deepmind/absent'"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained("deepmind/absent")


def test_subfolder_in_hub_cache_and_local_folder(tmp_path):
    saved = _saved(tmp_path / "repo" / "classifier")
    _hub_cache(tmp_path / "cache", "owner/repo", tmp_path / "repo")
    inputs = small_inputs(CLS)
    for source, kwargs in (
        ("owner/repo", {"cache_dir": tmp_path / "cache"}),
        (tmp_path / "repo", {}),
    ):
        model = perceiver_io.PerceiverForSequenceClassification.from_pretrained(
            source, subfolder="classifier", **kwargs
        )
        assert torch.equal(model(**inputs).logits, saved(**inputs).logits)
    with pytest.raises(FileNotFoundError, match="has no subfolder 'other'"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path / "repo", subfolder="other")


def test_unknown_local_path_is_reported_as_such(tmp_path):
    for source in (str(tmp_path / "nothing"), "./no/such/folder", "no-such-folder"):
        with pytest.raises(FileNotFoundError, match=re.escape(f"no such file or folder: {source!r}")):
            perceiver_io.PerceiverForSequenceClassification.from_pretrained(source)


def test_deepmind_file_keywords(tmp_path):
    from perceiver_io.checkpoints.haiku_trees import random_params_from_tree, read_param_tree, write_haiku_pickle

    tree = Path(__file__).resolve().parent / "data" / "deepmind-param-trees" / "optical_flow.tsv"
    if not tree.is_file():
        pytest.skip(f"parameter tree not found at {tree}")
    rows = [r for r in read_param_tree(tree) if not re.search(r"self_attention_\d+/", r[1])]  # one layer
    params, _ = random_params_from_tree(rows, 0)
    write_haiku_pickle(tmp_path / "flow.pystate", params, None, flatmapping=True)
    load = perceiver_io.PerceiverForOpticalFlow.from_pretrained
    model, info = load(
        tmp_path / "flow.pystate",
        num_self_attends_per_block=1,
        dtype="bfloat16",
        device_map="cpu",
        output_loading_info=True,
    )
    assert model.dtype == torch.bfloat16 and model.device == torch.device("cpu")
    assert _info(info) == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    reference = load(tmp_path / "flow.pystate", num_self_attends_per_block=1)
    assert reference.dtype == torch.float32
    assert torch.equal(model.perceiver.encoder.latents, reference.perceiver.encoder.latents.bfloat16())
    for kwargs, pattern in (
        ({"ignore_mismatched_sizes": True}, r"\['ignore_mismatched_sizes'\] do not apply to DeepMind checkpoint"),
        ({"config": PerceiverConfig()}, r"\['config'\] do not apply"),
        ({"decoder": None}, r"\['decoder'\] do not apply"),
    ):
        with pytest.raises(TypeError, match=pattern):
            load(tmp_path / "flow.pystate", num_self_attends_per_block=1, **kwargs)
    with pytest.raises(ValueError, match="local path; revision apply only to hub ids"):
        load(tmp_path / "flow.pystate", revision="main")
