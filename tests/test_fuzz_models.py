"""Fuzzing the seven heads and the bare PerceiverModel: every generated call is refused by our own check or
equals transformers on the same weights (see tests/fuzzing.py for the classification)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_CONFIGS, randomize_
from fuzz_inputs import (
    CLASS_LABEL_PLANS,
    FLOAT_SPECIALS,
    MASK_DTYPES,
    MASK_PLANS,
    ODD_DTYPES,
    Problem,
    build,
    build_class_labels,
    build_mask,
    class_label_problems,
    dtype_name,
    mask_problems,
    nonfinite,
    plans,
    shape_of,
)
from fuzzing import Case, Tally, assert_no_failures, close, examples, fuzz, run_case, single_thread
from hypothesis import strategies as st

import perceiver_io
from perceiver_io.checkpoints.loading import load_transformers_state_dict

# Issue 15 leaves integer images open ("accept uint8 and scale as the processor does, or refuse clearly"); the
# heads take model-ready pixel values, so an integer image is refused here until the library decides otherwise.
INTEGER_IMAGES_VALID = False

BUDGET = {
    "PerceiverForMaskedLM": 110,
    "PerceiverForSequenceClassification": 110,
    "PerceiverForImageClassificationLearned": 70,
    "PerceiverForImageClassificationFourier": 70,
    "PerceiverForImageClassificationConvProcessing": 50,
    "PerceiverForOpticalFlow": 50,
    "PerceiverForMultimodalAutoencoding": 50,
    "PerceiverModel": 50,
}


@pytest.fixture(scope="module")
def models(transformers_module, tmp_path_factory):
    """{head: (transformers model, our model from its save_pretrained folder)}, built once per module."""
    with single_thread():
        return _build_models(transformers_module, tmp_path_factory)


def _build_models(transformers_module, tmp_path_factory) -> dict:
    out = {}
    for head, fields in SMALL_CONFIGS.items():
        torch.manual_seed(0)
        ref = randomize_(getattr(transformers_module, head)(transformers_module.PerceiverConfig(**fields)), seed=1)
        folder = tmp_path_factory.mktemp(head)
        ref.save_pretrained(folder)
        out[head] = (ref, getattr(perceiver_io, head).from_pretrained(folder))
    # The bare model (no preprocessor, no decoder): transformers saves it without the "perceiver." prefix.
    fields = SMALL_CONFIGS["PerceiverForMaskedLM"]
    ref = randomize_(transformers_module.PerceiverModel(transformers_module.PerceiverConfig(**fields)), seed=2)
    ours = perceiver_io.PerceiverModel(perceiver_io.PerceiverConfig(**fields))
    load_transformers_state_dict(ours, ref.state_dict())
    out["PerceiverModel"] = (ref, ours.eval())
    return out


def input_problems(
    x: object, shape_ok: bool, kind: str, names: tuple[str, ...], dtypes: tuple[torch.dtype, ...]
) -> list[Problem]:
    names = (*names, shape_of(x))
    if not torch.is_tensor(x):
        return [(f"{kind} type", names)]
    if not shape_ok:
        return [(f"{kind} shape {'with a zero size' if 0 in x.shape else ''}".strip(), names)]
    if x.dtype not in dtypes:
        return [(f"{kind} dtype {dtype_name(x.dtype)}", (*names, dtype_name(x.dtype), "dtype"))]
    if nonfinite(x):
        return [(f"{kind} not finite", (*names, "finite", "NaN", "nan", "inf"))]
    return []


def classify_and_run(tally: Tally, problems: list[Problem], detail: str, call, check) -> None:
    kind = problems[0][0] if problems else "valid input"
    names = tuple(n for _, ns in problems for n in ns)
    run_case(tally, Case(kind, not problems, names, detail), call, check)


def output_check(ref_out: dict, ours_out) -> str | None:
    for key, expected in ref_out.items():
        got = getattr(ours_out, key)
        if isinstance(expected, dict):
            if not isinstance(got, dict) or got.keys() != expected.keys():
                return f"{key} keys {sorted(got) if isinstance(got, dict) else type(got)} vs {sorted(expected)}"
            for m in expected:
                problem = close(got[m], expected[m])
                if problem:
                    return f"{key}[{m}]: {problem}"
        else:
            problem = close(got, expected)
            if problem:
                return f"{key}: {problem}"
    return None


# ---------------------------------------------------------------------------------------------------------
# Text heads
# ---------------------------------------------------------------------------------------------------------

TEXT_PLAN = plans(
    {
        "batch": (st.sampled_from([1, 2, 3]), st.sampled_from([0, 1, 2])),
        "length": (st.integers(1, 24), st.sampled_from([0, 25, 40])),
        "rank": (st.just(2), st.sampled_from([1, 3])),
        "dtype": (st.sampled_from([torch.long, torch.long, torch.int32]), st.sampled_from(ODD_DTYPES)),
        "values": (st.just("in range"), st.sampled_from(["out of vocab", "negative"])),
        "mask": (st.sampled_from(["none", "valid"]), st.sampled_from(MASK_PLANS)),
        "mask_dtype": (st.sampled_from(MASK_DTYPES), st.sampled_from(MASK_DTYPES)),
        "labels": (
            st.sampled_from(["none", "full", "short"]),
            st.sampled_from(["too long", "wrong batch", "out of range", "negative", "float", "int32", "rank 1"]),
        ),
        "special": (st.none(), st.sampled_from(FLOAT_SPECIALS)),
    }
)


def build_text(plan: dict, vocab: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    b, t = plan["batch"], plan["length"]
    ids = build((b, t), torch.long, plan["seed"], low=0, high=vocab, special=None)
    if ids.numel() and plan["values"] != "in range":
        ids.view(-1)[0] = (
            vocab + int(ids.view(-1)[0]) if plan["values"] == "out of vocab" else -1 - int(ids.view(-1)[0])
        )
    ids = ids.to(plan["dtype"])
    if plan["special"] is not None and ids.numel() and ids.dtype.is_floating_point:
        ids.view(-1)[-1] = float(plan["special"])
    if plan["rank"] == 1:
        ids = ids.reshape(-1)
    elif plan["rank"] == 3:
        ids = ids[..., None]
    mask = build_mask(plan["mask"], plan["mask_dtype"], b, t, plan["seed"] + 1)
    return ids, mask


def text_problems(ids: torch.Tensor, mask, cfg) -> list[Problem]:
    """Token ids: (B, T) int64 or int32, B ≥ 1, 1 ≤ T ≤ max_position_embeddings, values in [0, vocab_size)."""
    names = ("inputs", "input_ids", "token")
    ok = ids.dim() == 2 and ids.shape[0] >= 1 and 1 <= ids.shape[1] <= cfg.max_position_embeddings
    problems = input_problems(ids, ok, "token ids", names, (torch.long, torch.int32))
    if not problems and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        problems = [("token ids out of vocabulary", (*names, "vocab"))]
    if not problems and ids.dim() == 2:
        problems = mask_problems(mask, ids.shape[0], ids.shape[1])
    return problems


def mlm_labels(plan: str, batch: int, vocab: int, max_pos: int, seed: int) -> torch.Tensor | None:
    if plan == "none":
        return None
    length = {"short": max_pos // 2, "too long": max_pos + 3}.get(plan, max_pos)
    b = batch + 1 if plan == "wrong batch" else batch
    labels = build((b, length), torch.long, seed, low=0, high=vocab)
    if labels.numel():
        labels[:, ::3] = -100
        if plan == "out of range":
            labels.view(-1)[-1] = vocab + 3
        if plan == "negative":
            labels.view(-1)[-1] = -5
    return {"float": labels.float(), "int32": labels.int(), "rank 1": labels.reshape(-1)}.get(plan, labels)


def mlm_label_problems(labels, batch: int, vocab: int, max_pos: int) -> list[Problem]:
    """MLM labels: int64 (B, L), 1 ≤ L ≤ max_position_embeddings, values in [0, vocab) or -100 (ignored)."""
    if labels is None:
        return []
    names = ("labels",)
    if labels.dtype != torch.long:
        return [("labels dtype", names)]
    if labels.dim() != 2 or labels.shape[0] != batch or not 1 <= labels.shape[1] <= max_pos:
        return [("labels shape", names)]
    if not ((labels == -100) | ((labels >= 0) & (labels < vocab))).all():
        return [("labels out of [0, vocab) ∪ {-100}", names)]
    return []


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
@pytest.mark.parametrize("head", ["PerceiverForMaskedLM", "PerceiverForSequenceClassification"])
def test_fuzz_text_heads(head, slow, models, tmp_path_factory):
    ref, ours = models[head]
    cfg = ours.config
    tally = Tally(f"{head}.forward")

    @torch.no_grad()
    def one(plan: dict) -> None:
        ids, mask = build_text(plan, cfg.vocab_size)
        b = ids.shape[0] if ids.dim() else 0
        if head == "PerceiverForMaskedLM":
            labels = mlm_labels(plan["labels"], b, cfg.vocab_size, cfg.max_position_embeddings, plan["seed"] + 2)
            label_problems = mlm_label_problems(labels, b, cfg.vocab_size, cfg.max_position_embeddings)
        else:
            lp = {"full": "valid", "short": "multi-label", "too long": "rank 2", "float": "float 1-d"}.get(
                plan["labels"], plan["labels"]
            )
            labels = build_class_labels(
                lp if lp in CLASS_LABEL_PLANS else "wrong batch", b, cfg.num_labels, plan["seed"] + 2
            )
            label_problems = class_label_problems(labels, b, cfg.num_labels)
        problems = text_problems(ids, mask, cfg) or label_problems
        detail = (
            f"inputs {dtype_name(ids.dtype)}{tuple(ids.shape)} {plan['values']}, "
            f"mask {plan['mask']}, labels {shape_of(labels)} {plan['labels']}"
        )

        ref_mask = None if mask is None else mask.float()  # transformers' masks are float or integer

        def check(out) -> str | None:
            expected = ref(inputs=ids, attention_mask=ref_mask)
            want = {"logits": expected.logits}
            if labels is not None:
                if head == "PerceiverForMaskedLM":
                    logits = expected.logits[:, : labels.shape[1]]
                    want["loss"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
                else:
                    ref.config.problem_type = None  # transformers keeps the problem type of its first call
                    want["loss"] = ref(inputs=ids, attention_mask=ref_mask, labels=labels).loss
            return output_check(want, out)

        classify_and_run(tally, problems, detail, lambda: ours(inputs=ids, attention_mask=mask, labels=labels), check)

    fuzz(tally, TEXT_PLAN, one, examples(BUDGET[head], slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


# ---------------------------------------------------------------------------------------------------------
# Image classification heads
# ---------------------------------------------------------------------------------------------------------

VALID_CLASS_LABELS = ("none", "valid", "multi-label")
ANY_CLASS_LABELS = tuple(p for p in CLASS_LABEL_PLANS if p not in VALID_CLASS_LABELS)
IMAGE_PLAN = plans(
    {
        "batch": (st.sampled_from([1, 2]), st.sampled_from([0, 1, 2])),
        "channels": (st.just(3), st.sampled_from([1, 4])),
        "size": (st.sampled_from(["config", "config", "other"]), st.sampled_from(["zero", "tiny"])),
        "rank": (st.just(4), st.sampled_from([3, 5])),
        "dtype": (st.just(torch.float32), st.sampled_from((*ODD_DTYPES, torch.long))),
        "special": (st.none(), st.sampled_from(FLOAT_SPECIALS)),
        "mask": (st.just("none"), st.just("wrong shape")),
        "labels": (st.sampled_from(VALID_CLASS_LABELS), st.sampled_from(ANY_CLASS_LABELS)),
    }
)
IMAGE_SIZES = {
    # head: (size the config implies, another size, the minimum the head's geometry admits)
    "PerceiverForImageClassificationLearned": ((8, 8), (6, 8), 8),
    "PerceiverForImageClassificationFourier": ((12, 10), (5, 7), 1),
    "PerceiverForImageClassificationConvProcessing": ((32, 32), (20, 13), 5),
}


def image_problems(x: torch.Tensor, head: str) -> list[Problem]:
    """Images: (B, 3, H, W) float32 pixel values (model-ready: the processor's output), finite, B ≥ 1. Learned
    positions need H = W = image_size; the conv stem (7×7 stride 2, then an unpadded 3×3 stride-2 max pool, as
    in transformers) needs H, W ≥ 5; Fourier features take any H, W ≥ 1."""
    config_hw, _, minimum = IMAGE_SIZES[head]
    names = ("inputs", "input grid", "pixel_values", "image")
    ok = x.dim() == 4 and x.shape[0] >= 1 and x.shape[1] == 3
    if ok and head.endswith("Learned"):
        ok = tuple(x.shape[2:]) == config_hw
    elif ok:
        ok = min(x.shape[2:]) >= minimum
    dtypes = (torch.float32, torch.uint8) if INTEGER_IMAGES_VALID else (torch.float32,)
    return input_problems(x, ok, "image", names, dtypes)


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
@pytest.mark.parametrize("head", list(IMAGE_SIZES))
def test_fuzz_image_heads(head, slow, models, tmp_path_factory):
    ref, ours = models[head]
    cfg = ours.config
    config_hw, other_hw, _ = IMAGE_SIZES[head]
    tally = Tally(f"{head}.forward")

    @torch.no_grad()
    def one(plan: dict) -> None:
        hw = {"config": config_hw, "other": other_hw, "zero": (0, config_hw[1]), "tiny": (1, 2)}[plan["size"]]
        b = plan["batch"]
        x = build((b, plan["channels"], *hw), plan["dtype"], plan["seed"], low=0, high=256, special=plan["special"])
        if plan["rank"] == 3:
            x = x[0] if b else build((plan["channels"], *hw), plan["dtype"], plan["seed"])
        elif plan["rank"] == 5:
            x = x[:, None]
        mask = None if plan["mask"] == "none" else torch.ones(b, 7, dtype=torch.long)
        labels = build_class_labels(plan["labels"], b, cfg.num_labels, plan["seed"] + 1)
        problems = image_problems(x, head)
        if mask is not None and not problems:
            problems = [("attention_mask shape", ("attention_mask", "mask"))]
        problems = problems or class_label_problems(labels, b, cfg.num_labels)
        detail = (
            f"inputs {dtype_name(x.dtype)}{tuple(x.shape)} special={plan['special']}, "
            f"mask {plan['mask']}, labels {shape_of(labels)} {plan['labels']}"
        )

        def check(out) -> str | None:
            ref.config.problem_type = None  # transformers keeps the problem type of its first call
            expected = ref(inputs=x, labels=labels)
            return output_check({"logits": expected.logits, "loss": expected.loss}, out)

        classify_and_run(tally, problems, detail, lambda: ours(inputs=x, attention_mask=mask, labels=labels), check)

    fuzz(tally, IMAGE_PLAN, one, examples(BUDGET[head], slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


# ---------------------------------------------------------------------------------------------------------
# Optical flow
# ---------------------------------------------------------------------------------------------------------

FLOW_PLAN = plans(
    {
        "batch": (st.sampled_from([1, 2]), st.just(0)),
        "frames": (st.just(2), st.sampled_from([1, 3])),
        "channels": (st.just(27), st.just(3)),
        # transformers reshapes its output to train_size, so only that size has a reference.
        "height": (st.just(8), st.just(0)),
        "width": (st.just(12), st.just(0)),
        "rank": (st.just(5), st.just(4)),
        "dtype": (st.just(torch.float32), st.sampled_from(ODD_DTYPES)),
        "special": (st.none(), st.sampled_from(FLOAT_SPECIALS)),
        "labels": (
            st.sampled_from(["none", "valid"]),
            st.sampled_from(["wrong shape", "wrong batch", "nan", "float64"]),
        ),
    }
)


def flow_problems(x: torch.Tensor) -> list[Problem]:
    """Frame patches (B, 2, 27, H, W) float32, finite, B, H, W ≥ 1 (any H × W: positions are relative)."""
    ok = x.dim() == 5 and tuple(x.shape[1:3]) == (2, 27) and x.shape[0] >= 1 and min(x.shape[3:]) >= 1
    return input_problems(x, ok, "flow frames", ("inputs", "frame", "optical flow"), (torch.float32,))


def flow_label_problems(labels, x: torch.Tensor) -> list[Problem]:
    """Flow labels: float32 (B, H, W, 2), finite."""
    if labels is None:
        return []
    expected = (x.shape[0], *x.shape[3:], 2)
    if labels.dtype != torch.float32 or tuple(labels.shape) != expected:
        return [("flow labels shape/dtype", ("labels",))]
    if not torch.isfinite(labels).all():
        return [("flow labels not finite", ("labels",))]
    return []


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
def test_fuzz_optical_flow(slow, models, tmp_path_factory):
    head = "PerceiverForOpticalFlow"
    ref, ours = models[head]
    tally = Tally(f"{head}.forward")

    @torch.no_grad()
    def one(plan: dict) -> None:
        b, h, w = plan["batch"], plan["height"], plan["width"]
        x = build((b, plan["frames"], plan["channels"], h, w), plan["dtype"], plan["seed"], special=plan["special"])
        if plan["rank"] == 4:
            x = x.flatten(1, 2)
        lb = b + (plan["labels"] == "wrong batch")
        lshape = (lb, h, w + (plan["labels"] == "wrong shape"), 2)
        labels = None if plan["labels"] == "none" else build(lshape, torch.float32, plan["seed"] + 1)
        if plan["labels"] == "nan" and labels.numel():
            labels.view(-1)[0] = float("nan")
        if plan["labels"] == "float64":
            labels = labels.double()
        problems = flow_problems(x) or flow_label_problems(labels, x)
        detail = (
            f"inputs {dtype_name(x.dtype)}{tuple(x.shape)} special={plan['special']}, "
            f"labels {shape_of(labels)} {plan['labels']}"
        )

        def check(out) -> str | None:
            logits = ref(inputs=x).logits
            loss = None if labels is None else torch.linalg.vector_norm(logits - labels, dim=-1).mean()
            return output_check({"logits": logits, "loss": loss}, out)

        classify_and_run(tally, problems, detail, lambda: ours(inputs=x, labels=labels), check)

    fuzz(tally, FLOW_PLAN, one, examples(BUDGET[head], slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


# ---------------------------------------------------------------------------------------------------------
# Multimodal autoencoding
# ---------------------------------------------------------------------------------------------------------

MULTIMODAL_PLAN = plans(
    {
        "batch": (st.sampled_from([1, 2]), st.just(0)),
        "keys": (st.just("exact"), st.sampled_from(["missing", "extra", "not a dict"])),
        "broken": (
            st.none(),
            st.sampled_from(
                [
                    # Frame count and frame size are free (positions are built for the input's grid, as in
                    # transformers); channels are not.
                    "image channels",
                    "audio length",
                    "audio rank",
                    "label width",
                    "batch mismatch",
                ]
            ),
        ),
        "dtype": (st.just(torch.float32), st.sampled_from(ODD_DTYPES)),
        "special": (st.none(), st.sampled_from(FLOAT_SPECIALS)),
        "points": (
            # None decodes the full grid at DeepMind's linspace positions, which transformers cannot (its
            # subsampled positions are -1 + 2i/n); with no reference for it, only index sets are generated.
            st.just("subset"),
            st.sampled_from(["out of range", "negative", "float", "2-d", "missing key"]),
        ),
    }
)


def multimodal_problems(inputs, points, cfg) -> list[Problem]:
    """{"image": (B, num_frames, 3, 4·image_size, 4·image_size), "audio": (B, num_frames·audio_samples_per_frame,
    1), "label": (B, num_labels)}, all float32 and finite, one B ≥ 1; subsampled_output_points None or
    {"image": int64 (N,) in [0, frames·H·W of output_shape), "audio": int64 (N,) in [0, audio patches)}."""
    names = ("inputs", "image", "audio", "label", "modalit")
    if not isinstance(inputs, dict):
        return [("inputs not a dict", (*names, "dict"))]
    if set(inputs) != {"image", "audio", "label"}:
        return [("modality keys", (*names, "keys"))]
    b = inputs["image"].shape[0]
    side = 4 * cfg.image_size
    expected = {
        "image": (b, cfg.num_frames, 3, side, side),
        "audio": (b, cfg.num_frames * cfg.audio_samples_per_frame, 1),
        "label": (b, cfg.num_labels),
    }
    for m, x in inputs.items():
        problems = input_problems(
            x, tuple(x.shape) == expected[m] and b >= 1, f"{m} input", (m, *names), (torch.float32,)
        )
        if problems:
            return problems
    if points is None:
        return []
    sizes = {
        "image": cfg.output_shape[1] * cfg.output_shape[2] * cfg.output_shape[3],
        "audio": expected["audio"][1] // cfg.samples_per_patch,
    }
    if set(points) != set(sizes):
        return [("subsampled_output_points keys", ("subsampled_output_points",))]
    for m, idx in points.items():
        if idx.dtype != torch.long or idx.dim() != 1 or (idx.numel() and (idx.min() < 0 or idx.max() >= sizes[m])):
            return [("subsampled_output_points out of range/dtype/rank", ("subsampled_output_points", m))]
    return []


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
def test_fuzz_multimodal(slow, models, tmp_path_factory):
    head = "PerceiverForMultimodalAutoencoding"
    ref, ours = models[head]
    cfg = ours.config
    tally = Tally(f"{head}.forward")

    @torch.no_grad()
    def one(plan: dict) -> None:
        b, seed, broken = plan["batch"], plan["seed"], plan["broken"]
        side = 4 * cfg.image_size
        shapes = {
            "image": [b, cfg.num_frames, 3, side, side],
            "audio": [b, cfg.num_frames * cfg.audio_samples_per_frame, 1],
            "label": [b, cfg.num_labels],
        }
        if broken == "image channels":
            shapes["image"][2] = 1
        elif broken == "audio length":
            shapes["audio"][1] -= 3
        elif broken == "audio rank":
            shapes["audio"] = shapes["audio"][:2]
        elif broken == "label width":
            shapes["label"][1] += 2
        elif broken == "batch mismatch":
            shapes["audio"][0] += 1
        inputs = {}
        for i, (m, shape) in enumerate(shapes.items()):
            dtype = plan["dtype"] if m == "image" else torch.float32
            inputs[m] = build(
                shape, dtype, seed + i, low=0, high=256, special=plan["special"] if m == "audio" else None
            )
        if plan["keys"] == "missing":
            del inputs["audio"]
        elif plan["keys"] == "extra":
            inputs["text"] = torch.zeros(b, 3)
        elif plan["keys"] == "not a dict":
            inputs = inputs["image"]
        n_img = cfg.output_shape[1] * cfg.output_shape[2] * cfg.output_shape[3]
        points = {"image": torch.arange(n_img - 40, n_img), "audio": torch.arange(0, 4)}
        kind = plan["points"]
        if kind == "none":
            points = None
        elif kind == "out of range":
            points["image"] = torch.arange(n_img - 5, n_img + 5)
        elif kind == "negative":
            points["audio"] = torch.tensor([-1, 0])
        elif kind == "float":
            points["image"] = points["image"].float()
        elif kind == "2-d":
            points["image"] = points["image"].reshape(2, -1)
        elif kind == "missing key":
            del points["audio"]
        problems = multimodal_problems(inputs, points, cfg)
        shapes_text = (
            {m: f"{dtype_name(x.dtype)}{tuple(x.shape)}" for m, x in inputs.items()}
            if isinstance(inputs, dict)
            else shape_of(inputs)
        )
        detail = f"inputs {shapes_text} special={plan['special']}, points {kind}"

        def check(out) -> str | None:
            expected = ref(inputs=inputs, subsampled_output_points=points)
            return output_check({"logits": expected.logits}, out)

        classify_and_run(tally, problems, detail, lambda: ours(inputs=inputs, subsampled_output_points=points), check)

    fuzz(tally, MULTIMODAL_PLAN, one, examples(BUDGET[head], slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)


# ---------------------------------------------------------------------------------------------------------
# PerceiverModel without preprocessor or decoder: (B, M, d_model) in, latents out
# ---------------------------------------------------------------------------------------------------------

MODEL_PLAN = plans(
    {
        "batch": (st.sampled_from([1, 2]), st.just(0)),
        "length": (st.integers(1, 30), st.just(0)),
        "width": (st.just("d_model"), st.just("other")),
        "rank": (st.just(3), st.sampled_from([2, 4])),
        "dtype": (st.just(torch.float32), st.sampled_from(ODD_DTYPES)),
        "special": (st.none(), st.sampled_from(FLOAT_SPECIALS)),
        "mask": (st.sampled_from(["none", "valid"]), st.sampled_from(MASK_PLANS)),
        "mask_dtype": (st.sampled_from(MASK_DTYPES), st.sampled_from(MASK_DTYPES)),
    }
)


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "slow"])
def test_fuzz_bare_model(slow, models, tmp_path_factory):
    ref, ours = models["PerceiverModel"]
    d = ours.config.d_model
    tally = Tally("PerceiverModel.forward (no preprocessor)")

    @torch.no_grad()
    def one(plan: dict) -> None:
        b, m = plan["batch"], plan["length"]
        width = d if plan["width"] == "d_model" else d + 5
        x = build((b, m, width), plan["dtype"], plan["seed"], special=plan["special"])
        if plan["rank"] == 2:
            x = x[0] if b else build((m, width), plan["dtype"], plan["seed"])
        elif plan["rank"] == 4:
            x = x[:, None]
        mask = build_mask(plan["mask"], plan["mask_dtype"], b, m, plan["seed"] + 1)
        ok = x.dim() == 3 and x.shape[0] >= 1 and x.shape[1] >= 1 and x.shape[2] == d
        problems = input_problems(x, ok, "inputs", ("inputs", "d_model"), (torch.float32,))
        problems = problems or mask_problems(mask, b, m)
        detail = (
            f"inputs {dtype_name(x.dtype)}{tuple(x.shape)} special={plan['special']}, "
            f"mask {plan['mask']} {shape_of(mask)}"
        )

        def check(out) -> str | None:
            expected = ref(inputs=x, attention_mask=None if mask is None else mask.float())
            return output_check({"last_hidden_state": expected.last_hidden_state}, out)

        classify_and_run(tally, problems, detail, lambda: ours(x, attention_mask=mask), check)

    fuzz(tally, MODEL_PLAN, one, examples(BUDGET["PerceiverModel"], slow), tmp_path_factory.getbasetemp())
    assert_no_failures(tally)
