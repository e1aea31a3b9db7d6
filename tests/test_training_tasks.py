"""Training tasks beyond MNIST: byte MLM, image folders, text classification, optical flow, multimodal."""

from __future__ import annotations

import bz2
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from perceiver_io.training.data import mediawiki_text, read_corpus
from perceiver_io.training.tasks import BYTE_OFFSET, MlmTask, build, load_recipe
from perceiver_io.training.trainer import METRICS_FILE, TrainConfig, Trainer, read_metrics

TINY_MLM = {
    "max_position_embeddings": 32,
    "num_latents": 8,
    "d_latents": 32,
    "d_model": 32,
    "num_self_attends_per_block": 1,
    "num_self_attention_heads": 2,
    "num_cross_attention_heads": 2,
    "attention_probs_dropout_prob": 0.0,
}

WIKI_XML = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
  <page><title>A</title><revision>
    <text xml:space="preserve">'''Alpha''' is [[a letter]] &amp; more.</text></revision></page>
  <page><title>B</title><revision><text xml:space="preserve">Beta &lt;b&gt;</text></revision></page>
</mediawiki>
"""


def test_read_corpus_plain_compressed_and_mediawiki(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"plain ")
    (tmp_path / "b.txt.bz2").write_bytes(bz2.compress(b"packed"))
    assert read_corpus([tmp_path / "a.txt", tmp_path / "b.txt.bz2"]) == b"plain packed"
    dump = tmp_path / "wiki.xml.bz2"
    dump.write_bytes(bz2.compress(WIKI_XML.encode()))
    assert mediawiki_text(dump) == b"'''Alpha''' is [[a letter]] & more.\n\nBeta <b>"
    assert read_corpus([dump], "mediawiki") == mediawiki_text(dump)
    with pytest.raises(ValueError, match="text_format='html'"):
        read_corpus([dump], "html")


def test_mlm_baselines_are_computed_from_the_data(tmp_path: Path) -> None:
    # Training text: 3/4 'e', 1/4 't'; the held-out tail is all 't', so the majority guess is always wrong.
    (tmp_path / "t.txt").write_bytes(b"eeet" * 240 + b"t" * 64)
    task = MlmTask(files=[str(tmp_path / "t.txt")], val_fraction=64 / 1024, model_config=TINY_MLM)
    assert task.most_frequent_byte == ord("e")
    metrics = task.evaluate(task.build_model())
    assert metrics["accuracy_baseline"] == 0.0
    counts = {ord("e"): 720 + 1, ord("t"): 240 + 1}
    expected_bits = -math.log2(counts[ord("t")] / (960 + 256))  # add-one smoothing over 256 byte values
    assert metrics["bits_per_byte_baseline"] == pytest.approx(expected_bits)
    assert metrics["bits_per_byte"] == pytest.approx(metrics["mlm_loss"] / math.log(2))
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_mlm_batch_windows_are_text_bytes(tmp_path: Path) -> None:
    text = bytes(range(32, 127)) * 20
    (tmp_path / "t.txt").write_bytes(text)
    task = MlmTask(files=[str(tmp_path / "t.txt")], mask_prob=0.0, model_config=TINY_MLM)
    batch = task.batch(torch.tensor([0, 3]), train=False)
    assert batch["inputs"].shape == (2, 32)
    assert bytes((batch["inputs"][1] - BYTE_OFFSET).tolist()) == text[3 * 32 : 4 * 32]
    assert (batch["labels"] == -100).all()  # nothing masked at mask_prob 0


def test_mlm_span_masking_setting_reaches_the_batches(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes(bytes(range(32, 127)) * 200)
    with pytest.raises(ValueError, match=r"mean_span=0\.5"):
        MlmTask(files=[str(tmp_path / "t.txt")], mean_span=0.5, model_config=TINY_MLM)
    torch.manual_seed(0)
    spans = MlmTask(files=[str(tmp_path / "t.txt")], mean_span=8.0, model_config=TINY_MLM)
    selected = spans.batch(torch.arange(64), train=False)["labels"] != -100
    starts = selected[:, 1:] & ~selected[:, :-1]  # runs beginning after position 0
    # Spans of mean 8 give few, long runs: far fewer run starts than the ~0.15·0.85 per byte of single bytes.
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.03)
    assert starts.float().mean().item() < 0.05


def test_mlm_learns_a_fixed_batch(tmp_path: Path) -> None:
    """40 steps on one batch of English text: the masked-byte loss falls well below ln 262 (uniform guess)."""
    prose = b"The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire. "
    (tmp_path / "t.txt").write_bytes((prose * 5)[: 32 * 12])  # 288 training bytes: 8 slots of 32
    recipe = load_recipe("mlm", [f"task.files=['{tmp_path / 't.txt'}']", "task.val_fraction=0.25"])
    recipe["model"] = TINY_MLM
    recipe["train"].update(
        out_dir=str(tmp_path / "run"), steps=40, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=0,
        checkpoint_every=0, log_every=1, progress=False,
    )  # fmt: skip
    task, config = build(recipe)
    summary = Trainer(task, config).fit()
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / METRICS_FILE) if "loss" in r]
    assert sum(losses[-5:]) / 5 < 0.7 * math.log(262), losses
    assert {"eval/bits_per_byte", "eval/bits_per_byte_baseline", "eval/accuracy_baseline"} <= set(summary)


# ------------------------------------------------------------------------------------------- image folder

TINY_IMAGE = [
    "task.image_size=32",
    "task.head='conv'",
    "model.num_latents=8",
    "model.d_latents=32",
    "model.num_blocks=1",
    "model.num_self_attends_per_block=1",
    "model.num_self_attention_heads=2",
    "model.image_size=32",
    "train.batch_size=4",
    "train.log_every=1",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.progress=false",
]


def _photo_folders(root: Path) -> tuple[Path, Path]:
    """ImageNet-layout train/ and val/ folders: three real scikit-image photos, each a class; training images
    are four corner crops, the held-out one the centre crop."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    photos = {"astronaut": data.astronaut(), "cat": data.chelsea(), "coffee": data.coffee()}
    for name, photo in photos.items():
        h, w = photo.shape[:2]
        s = min(h, w) * 3 // 4
        corners = [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s)]
        for split, boxes in (("train", corners), ("val", [((h - s) // 2, (w - s) // 2)])):
            (root / split / name).mkdir(parents=True)
            for i, (top, left) in enumerate(boxes):
                Image.fromarray(photo[top : top + s, left : left + s]).save(root / split / name / f"{i}.jpg")
    return root / "train", root / "val"


def test_image_folder_lists_classes_and_rejects_bad_folders(tmp_path: Path) -> None:
    from perceiver_io.training.vision import list_image_folder

    train, _ = _photo_folders(tmp_path)
    paths, labels, classes = list_image_folder(train)
    assert classes == ["astronaut", "cat", "coffee"] and labels == [0] * 4 + [1] * 4 + [2] * 4
    assert [p.parent.name for p in paths] == [classes[i] for i in labels]
    with pytest.raises(ValueError, match="does not exist"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class subfolders"):
        list_image_folder(tmp_path / "empty")


def test_image_augment_is_seeded_and_normalised() -> None:
    pytest.importorskip("kornia")
    data = pytest.importorskip("skimage.data")
    from perceiver_io.training.vision import ImageAugment

    augment = ImageAugment(48)
    images = [data.chelsea(), data.coffee(), data.astronaut()]  # three different sizes
    torch.manual_seed(1)
    first = augment(images)
    torch.manual_seed(1)
    assert torch.equal(augment(images), first)  # the global RNG fixes every draw, as the trainer's resume needs
    assert first.shape == (3, 3, 48, 48) and first.isfinite().all()
    assert -3 < first.mean() < 3 and first.std() < 3  # ImageNet-normalised, not 0..255
    with pytest.raises(ValueError, match="randaugment_magnitude=12"):
        ImageAugment(48, randaugment_magnitude=12)


def test_image_folder_recipe_trains_saves_and_classifies(tmp_path: Path) -> None:
    """The paper's recipe (RandAugment, MixUp/CutMix, LAMB) on real photos: a few steps, then the saved folder
    classifies files through the same path as `perceiver classify`."""
    pytest.importorskip("kornia")
    from perceiver_io.checkpoints.loading import load_model
    from perceiver_io.tasks.classify import classify

    train, val = _photo_folders(tmp_path)
    folders = [f"task.train_dir='{train}'", f"task.val_dir='{val}'", f"train.out_dir='{tmp_path / 'run'}'"]
    task, config = build(load_recipe("imagenet", [*TINY_IMAGE, *folders, "train.steps=3"]))
    assert config.lr == 5e-4 and config.schedule == "constant_cosine" and task.mixup_alpha == 0.2
    batch = task.batch(torch.arange(4), train=True)
    assert batch["inputs"].shape == (4, 3, 32, 32)
    torch.testing.assert_close(batch["labels"].sum(-1), torch.ones(4))  # mixed soft targets
    summary = Trainer(task, config).fit()
    assert summary["step"] == 3 and 0.0 <= summary["eval/accuracy"] <= 1.0
    model = load_model(tmp_path / "run" / "model")
    assert model.config.id2label == {0: "astronaut", 1: "cat", 2: "coffee"}
    results = classify(model, [str(p) for p in sorted(val.rglob("*.jpg"))], top_k=1, processor="original")
    assert all(top[0][0] in {"astronaut", "cat", "coffee"} for top in results)


def test_missing_kornia_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from perceiver_io.training.vision import require_kornia

    monkeypatch.setitem(sys.modules, "kornia", None)
    with pytest.raises(ImportError, match=r"perceiver_io\[augment\]"):
        require_kornia()


# ------------------------------------------------------------------------------------- text classification

TINY_TEXT = {**TINY_MLM, "max_position_embeddings": 48}


def test_read_labelled_texts_csv_and_jsonl(tmp_path: Path) -> None:
    from perceiver_io.training.text import read_labelled_texts

    (tmp_path / "a.csv").write_text('text,label\n"good, fun",pos\ndull,neg\n', encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"text": "good, fun", "label": "pos"}\n\n{"text": "dull", "label": "neg"}\n')
    expected = [("good, fun", "pos"), ("dull", "neg")]
    assert read_labelled_texts(tmp_path / "a.csv") == read_labelled_texts(tmp_path / "a.jsonl") == expected
    (tmp_path / "b.csv").write_text("sentence,label\nx,1\n")
    with pytest.raises(ValueError, match="lacks column 'text'"):
        read_labelled_texts(tmp_path / "b.csv")
    with pytest.raises(ValueError, match=r"suffix '\.tsv'"):
        read_labelled_texts(tmp_path / "a.tsv")


def test_text_classification_learns_and_reports_the_majority_baseline(tmp_path: Path) -> None:
    from perceiver_io.training.text import TextClassificationTask

    rows = [("what a lovely happy film", "pos"), ("a dreary sad waste", "neg"), ("happy and lovely", "pos")]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows * 4))
    (tmp_path / "val.csv").write_text("text,label\na dreary waste,neg\nlovely,pos\nsad,neg\n")
    (tmp_path / "bad.csv").write_text("text,label\nmeh,neutral\n")
    with pytest.raises(ValueError, match=r"labels \['neutral'\] do not occur"):
        TextClassificationTask(str(tmp_path / "train.csv"), str(tmp_path / "bad.csv"), model_config=TINY_TEXT)
    task = TextClassificationTask(str(tmp_path / "train.csv"), str(tmp_path / "val.csv"), model_config=TINY_TEXT)
    assert task.classes == ["neg", "pos"] and task.inputs["inputs"].shape == (12, 48)
    config = TrainConfig(out_dir=str(tmp_path / "run"), steps=30, batch_size=12, lr=1e-2, scale_lr=False,
                         checkpoint_every=0, progress=False)  # fmt: skip
    summary = Trainer(task, config).fit()
    assert summary["eval/accuracy_baseline"] == pytest.approx(1 / 3)  # 'pos' is the training majority
    assert summary["loss"] < 0.5 * math.log(2)  # 12 rows seen every step are learnt
    assert (tmp_path / "run" / "model" / "tokenizer_config.json").exists()


# ---------------------------------------------------------------------------------------------- optical flow

TINY_FLOW = {
    "num_latents": 8,
    "d_latents": 32,
    "num_self_attends_per_block": 1,
    "num_self_attention_heads": 2,
    "num_cross_attention_heads": 1,
    "attention_probs_dropout_prob": 0.0,
}


def test_warped_crop_has_the_exact_flow() -> None:
    pytest.importorskip("skimage")
    from perceiver_io.training.flow import load_photo, warped_crop

    photo = load_photo("skimage:chelsea")
    frame1, frame2, flow = warped_crop(photo, (20, 30), max_disp=2.0, seed=3)
    assert frame1.shape == frame2.shape == (20, 30, 3) and flow.shape == (20, 30, 2)
    assert 0 < np.hypot(flow[..., 0], flow[..., 1]).max() <= 2.0 + 1e-5
    # frame2 is a crop of the photo; frame1(p) = photo(p + flow(p)), p + flow(p) inside the photo.
    match = [
        (t, l)
        for t in range(photo.shape[0] - 19)
        for l in range(photo.shape[1] - 29)
        if np.array_equal(photo[t, l : l + 30], frame2[0].astype(np.uint8))
    ]
    top, left = match[0]
    y, x = np.mgrid[0:20, 0:30]
    sy, sx = top + y + flow[..., 1], left + x + flow[..., 0]
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    p = photo.astype(np.float64)
    bilinear = (p[y0, x0] * (1 - fy) * (1 - fx) + p[y0, x0 + 1] * (1 - fy) * fx
                + p[y0 + 1, x0] * fy * (1 - fx) + p[y0 + 1, x0 + 1] * fy * fx)  # fmt: skip
    np.testing.assert_allclose(frame1, bilinear, atol=1e-3)


def test_reversed_pair_is_the_forward_pair_swapped_with_the_inverse_flow() -> None:
    pytest.importorskip("skimage")
    from scipy.ndimage import map_coordinates

    from perceiver_io.training.flow import FlowTask, load_photo, warped_crop

    photo = load_photo("skimage:chelsea")
    frame1, frame2, flow = warped_crop(photo, (20, 30), 2.0, 5, motion="affine", contrast=64.0)
    back1, back2, back = warped_crop(photo, (20, 30), 2.0, 5, motion="affine", contrast=64.0, reverse=True)
    np.testing.assert_array_equal(back1, frame2)
    np.testing.assert_array_equal(back2, frame1)
    # q + G(q) is where q came from: the forward flow there brings it back, F(q + G(q)) = −G(q).
    y, x = np.mgrid[0:20, 0:30].astype(np.float64)
    source = [y + back[..., 1], x + back[..., 0]]
    inside = (source[0] >= 0) & (source[0] <= 19) & (source[1] >= 0) & (source[1] <= 29)
    forward_there = np.stack([map_coordinates(flow[..., c].astype(np.float64), source, order=1) for c in (0, 1)], -1)
    np.testing.assert_allclose(forward_there[inside], -back[inside], atol=1e-4)
    assert inside.mean() > 0.8 and np.abs(back).max() > 0.2

    # The contrast setting maps the crop's grey levels linearly (then clips) to a standard deviation of about 64.
    plain = warped_crop(photo, (20, 30), 2.0, 5, motion="affine")[1]
    unclipped = (frame2 > 0) & (frame2 < 255)
    assert unclipped.mean() > 0.9 and np.corrcoef(plain[unclipped], frame2[unclipped])[0, 1] > 0.99999
    assert 0.8 * 64 < frame2.std() < 1.2 * 64 and plain.std() < 40

    task = FlowTask(images=["skimage:chelsea"], crop=(16, 16), max_disp=1.5, motion="affine", contrast=64.0,
                    reversed_pairs=True, model_config=TINY_FLOW)  # fmt: skip
    batch = task.batch(torch.arange(5), train=True)
    torch.testing.assert_close(batch["inputs"][1], batch["inputs"][0].flip(0))
    torch.testing.assert_close(batch["inputs"][3], batch["inputs"][2].flip(0))
    # Affine motion this small reverses to nearly its negative.
    torch.testing.assert_close(batch["labels"][1], -batch["labels"][0], atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="contrast=300"):
        FlowTask(images=["skimage:chelsea"], contrast=300)


def test_flow_task_trains_on_flo_pairs_and_evaluates_against_zero_flow(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    from PIL import Image

    from perceiver_io.tasks.flow_utils import write_flo
    from perceiver_io.training.flow import FlowTask, flo_pairs, load_photo, warped_crop

    photo = load_photo("skimage:coffee")
    for i in range(2):
        frame1, frame2, flow = warped_crop(photo, (24, 32), 2.0, seed=i)
        Image.fromarray(frame1.round().astype(np.uint8)).save(tmp_path / f"{i:05d}_img1.png")
        Image.fromarray(frame2.astype(np.uint8)).save(tmp_path / f"{i:05d}_img2.png")
        write_flo(tmp_path / f"{i:05d}_flow.flo", flow)
    assert [t[2].name for t in flo_pairs(tmp_path)] == ["00000_flow.flo", "00001_flow.flo"]
    with pytest.raises(ValueError, match="no NAME_img1"):
        flo_pairs(tmp_path / "x")
    task = FlowTask(flo_dir=str(tmp_path), val_images=["skimage:astronaut"], crop=(16, 16), n_val=4,
                    model_config=TINY_FLOW)  # fmt: skip
    batch = task.batch(torch.arange(3), train=True)
    assert batch["inputs"].shape == (3, 2, 27, 16, 16) and batch["labels"].shape == (3, 16, 16, 2)
    config = TrainConfig(out_dir=str(tmp_path / "run"), steps=2, batch_size=2, checkpoint_every=0, progress=False)
    summary = Trainer(task, config).fit()
    # The output layer starts at zero (DeepMind's init), so the model predicts ~zero flow after 2 small steps.
    assert summary["eval/epe"] == pytest.approx(summary["eval/epe_baseline"], rel=0.2)
    assert 0.3 < summary["eval/epe_baseline"] < 2.0


# ------------------------------------------------------------------------------------ multimodal autoencoding

TINY_MULTIMODAL = {
    "num_latents": 8,
    "d_latents": 32,
    "num_self_attends_per_block": 1,
    "num_self_attention_heads": 2,
    "num_cross_attention_heads": 1,
    "num_frames": 2,
    "image_size": 4,
    "audio_samples_per_frame": 1920,
    "samples_per_patch": 16,
    "output_shape": [1, 2, 16, 16],
    "output_num_channels": 16,
    "label_trainable_num_channels": 16,
    "attention_probs_dropout_prob": 0.0,
}


def _write_clip(path: Path, seed: int) -> None:
    """A 6-frame 25 fps 32×32 video with a 48 kHz mono tone, written with PyAV."""
    av = pytest.importorskip("av")
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=48_000, layout="mono")
        for _ in range(6):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), format="rgb24")
            container.mux(video.encode(frame))
        tone = (0.3 * np.sin(np.arange(6 * 1920) * 2 * np.pi * 440 / 48_000)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate = 48_000
            container.mux(audio.encode(chunk))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def test_multimodal_task_smoke(tmp_path: Path) -> None:
    """Two classes of tiny clips: batches have the model's shapes and a few steps of the paper's loss run."""
    from perceiver_io.training.multimodal import MultimodalTask

    for name in ("a", "b"):
        (tmp_path / "videos" / name).mkdir(parents=True)
        _write_clip(tmp_path / "videos" / name / "clip.mp4", seed=len(name))
    task = MultimodalTask(str(tmp_path / "videos"), max_windows=2, image_points=64, audio_points=32,
                          model_config=TINY_MULTIMODAL)  # fmt: skip
    assert task.classes == ["a", "b"] and task.n_train == 4 and task.labels.tolist() == [0, 0, 1, 1]
    batch = task.batch(torch.arange(2), train=True)
    assert batch["image"].shape == (2, 2, 3, 16, 16) and batch["audio"].shape == (2, 3840, 1)
    assert batch["audio"].abs().max() > 0.1  # the tone's soundtrack was read
    config = TrainConfig(out_dir=str(tmp_path / "run"), steps=3, batch_size=2, lr=1e-3, scale_lr=False,
                         checkpoint_every=0, progress=False)  # fmt: skip
    summary = Trainer(task, config).fit()
    assert math.isfinite(summary["loss"]) and (tmp_path / "run" / "model" / "config.json").exists()


@pytest.mark.slow
def test_mlm_recipe_beats_the_unigram_baseline_on_wikipedia(tmp_path: Path) -> None:
    """The built-in MLM recipe on gensim's Wikipedia excerpt (206 articles of wikitext), at most 20 minutes:
    held-out bits per byte clearly below the unigram baseline, masked-byte accuracy above the majority byte."""
    utils = pytest.importorskip("gensim.test.utils")
    dump = utils.datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    out = tmp_path / "mlm"
    command = [sys.executable, "-m", "perceiver_io.training.cli", "mlm", "--out", str(out), "--no-progress",
               "--set", f"task.files=['{dump}']", "--set", "task.text_format='mediawiki'"]  # fmt: skip
    start = time.monotonic()
    subprocess.run(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, check=True, timeout=1500)
    elapsed = time.monotonic() - start
    final = [r for r in read_metrics(out / METRICS_FILE) if "eval/bits_per_byte" in r][-1]
    print(final, f"{elapsed:.0f} s")
    assert final["eval/bits_per_byte"] < final["eval/bits_per_byte_baseline"] - 0.3
    assert final["eval/accuracy"] > final["eval/accuracy_baseline"]
    assert elapsed <= 1200


@pytest.mark.slow
def test_flow_recipe_halves_the_zero_flow_error_on_a_held_out_photo(tmp_path: Path) -> None:
    """The built-in flow recipe (warped crops of ten scikit-image photos, forward and reversed pairs): on crops of
    a photo never trained on (astronaut), the end-point error ends below half that of predicting zero flow."""
    pytest.importorskip("skimage")
    out = tmp_path / "flow"
    command = [sys.executable, "-m", "perceiver_io.training.cli", "flow", "--out", str(out), "--no-progress"]
    start = time.monotonic()
    subprocess.run(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, check=True, timeout=2400)
    final = [r for r in read_metrics(out / METRICS_FILE) if "eval/epe" in r][-1]
    print(final, f"{time.monotonic() - start:.0f} s")
    assert final["eval/epe"] < 0.5 * final["eval/epe_baseline"]
    assert 0.5 < final["eval/epe_baseline"] < 1.2  # the held-out motions are the recipe's, not empty
