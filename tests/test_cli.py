"""The ``perceiver`` command end to end: small random models saved as transformers folders, real inputs (scikit-image
photos, the Middlebury motorcycle stereo pair with ground truth, Megamind.avi from Debian's opencv-doc)."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_CONFIGS, randomize_
from PIL import Image, ImageSequence
from skimage import data
from test_tasks import write_test_video

import perceiver_io
from perceiver_io import PerceiverConfig
from perceiver_io.checkpoints.loading import load_model
from perceiver_io.cli import COMMANDS, main
from perceiver_io.tasks import optical_flow
from perceiver_io.tasks.flow_utils import end_point_error, read_flo, stereo_motorcycle_pair, write_flo

OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
OPENCV_FILES = ("Megamind.avi", "dnn/action_recongnition_kinetics.txt")


def save_small(folder: Path, head: str, **overrides) -> str:
    config = PerceiverConfig.from_dict({**SMALL_CONFIGS[head], **overrides})
    randomize_(getattr(perceiver_io, head)(config)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {
        "mlm": save_small(root / "mlm", "PerceiverForMaskedLM", max_position_embeddings=64),
        "classifier": save_small(root / "classifier", "PerceiverForImageClassificationFourier", image_size=32),
        "flow": save_small(root / "flow", "PerceiverForOpticalFlow"),
        # Tiles of 260x400: the 500x741 motorcycle pair takes 2 x 2 of them. Narrow encoder keys keep it quick.
        "flow_large": save_small(
            root / "flow_large",
            "PerceiverForOpticalFlow",
            train_size=[260, 400],
            cross_attention_shape_for_attention="q",
        ),
        # One tile for frames up to 64x96: quick runs on real photos cut down.
        "flow_mid": save_small(
            root / "flow_mid",
            "PerceiverForOpticalFlow",
            train_size=[64, 96],
            cross_attention_shape_for_attention="q",
        ),
        # 2 frames of 32x32 and 2 x 64 audio samples per clip.
        "multimodal": save_small(
            root / "multimodal",
            "PerceiverForMultimodalAutoencoding",
            image_size=8,
            output_shape=[1, 2, 32, 32],
            audio_samples_per_frame=64,
        ),
    }


@pytest.fixture(scope="session")
def opencv_data() -> Path:
    """Files from Debian's opencv-doc package, fetched once with apt-get into a cache folder.

    The cache is $PERCEIVER_TEST_CACHE, else ~/.cache/perceiver_io-tests. Skips if the package cannot be had.
    """
    cache = Path(os.environ.get("PERCEIVER_TEST_CACHE", Path.home() / ".cache" / "perceiver_io-tests"))
    folder = cache / "opencv-doc"
    if all((folder / name).is_file() for name in OPENCV_FILES):
        return folder
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        pytest.skip("opencv-doc test data needs apt-get and dpkg-deb (Debian/Ubuntu)")
    download = cache / "download"
    download.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=download, capture_output=True, text=True)
    debs = sorted(download.glob("opencv-doc_*.deb"))
    if fetched.returncode or not debs:
        pytest.skip(f"`apt-get download opencv-doc` failed (run apt-get update?): {fetched.stderr.strip()[-300:]}")
    payload = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], capture_output=True, check=True).stdout
    wanted = {f"./{OPENCV_DATA}/{name}": name for name in OPENCV_FILES}
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        for member in tar.getmembers():
            if member.name in wanted:
                target = folder / wanted[member.name]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    shutil.rmtree(download)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of three real photos (one grey) and a text file that the folder scan must skip."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "camera"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    (folder / "README.txt").write_text("not an image")
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, argv, message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------
# help


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: perceiver {command}" in out
    if command in ("fill-mask", "classify", "flow", "autoencode"):
        assert "Input:" in out and "Output" in out


def test_a_subcommand_is_two_functions_and_one_registration(capsys, monkeypatch):
    def hello_arguments(parser):
        parser.add_argument("--name", default="world")

    def run_hello(args):
        """Say hello.

        Input: nothing. Output: a greeting."""
        print(f"hello {args.name}")
        return 3

    monkeypatch.setitem(COMMANDS, "hello", (hello_arguments, run_hello))
    assert run(capsys, "hello", "--name", "perceiver") == (3, "hello perceiver\n", "")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Say hello." in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# fill-mask


def test_fill_mask_the_colab_sentence(capsys, models):
    code, out, _ = run(
        capsys, "fill-mask", "-m", models["mlm"], "This is an incomplete sentence where some words are missing.",
        "--mask", "51:60", "--top-k", "2",
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("filled: This is an incomplete sentence where some words are")
    assert lines[1].startswith("bytes 51:60: ") and lines[1].endswith("(original ' missing.')")
    assert [int(line.split()[0]) for line in lines[2:]] == list(range(51, 60))
    assert all(len(re.findall(r" 0\.\d{3}", line)) == 2 for line in lines[2:])


def test_fill_mask_markers_and_stdin(capsys, models, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello [MASK:3] world\n"))
    code, out, _ = run(capsys, "fill-mask", "-m", models["mlm"], "-")
    assert code == 0 and "bytes 6:9: " in out and "original" not in out


def test_fill_mask_errors(capsys, models):
    assert_user_error(capsys, ["fill-mask", "-m", models["mlm"], "x" * 70, "--mask", "0:1"], "70 UTF-8 bytes")
    assert_user_error(capsys, ["fill-mask", "-m", models["mlm"], "plain"], "nothing to fill")
    assert_user_error(capsys, ["fill-mask", "-m", models["flow"], "a [MASK:1]"], "needs a PerceiverForMaskedLM")
    with pytest.raises(SystemExit) as exit_info:
        main(["fill-mask", "-m", models["mlm"], "abc", "--mask", "5"])
    assert exit_info.value.code == 2
    assert "is not a byte range START:END" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# classify


@pytest.mark.parametrize("processor", ["original", "transformers"])
def test_classify_a_folder(capsys, models, photos, processor):
    code, out, _ = run(
        capsys, "classify", "-m", models["classifier"], photos, "--top-k", "3", "--batch-size", "2",
        "--processor", processor,
    )  # fmt: skip
    assert code == 0
    blocks = out.strip().split("\n")
    assert [Path(b).name for b in blocks[::4]] == ["camera.png", "chelsea.png", "coffee.png"]
    for n in range(3):
        ranks = [re.match(r"\s+(\d)\.\s+([\d.]+)%\s+(\d)$", line) for line in blocks[4 * n + 1 : 4 * n + 4]]
        assert [int(r[1]) for r in ranks] == [1, 2, 3]
        probs = [float(r[2]) for r in ranks]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.01


def test_classify_with_label_names(capsys, models, photos, tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\ncar\ncup\nman\n")
    code, out, _ = run(capsys, "classify", "-m", models["classifier"], photos / "chelsea.png", "--labels",
                       tmp_path / "labels.txt", "--top-k", "5")  # fmt: skip
    assert code == 0
    assert sorted(line.split()[-1] for line in out.splitlines()[1:]) == ["car", "cat", "cup", "dog", "man"]


def test_classify_errors(capsys, models, photos, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, out, err = run(capsys, "classify", "-m", models["classifier"], tmp_path / "broken.jpg")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"perceiver classify: error: {tmp_path / 'broken.jpg'}: not a readable image "
        f"(cannot identify image file '{tmp_path / 'broken.jpg'}')",
        "perceiver classify: error: 1 of 1 image(s) could not be read (see above); 0 classified",
    ]
    assert_user_error(capsys, ["classify", "-m", models["flow"], photos], "classify needs a")
    (tmp_path / "empty").mkdir()
    assert_user_error(capsys, ["classify", "-m", models["classifier"], tmp_path / "empty"], "no image files")
    assert_user_error(capsys, ["classify", "-m", tmp_path / "nothing", photos], "nothing: no such file or folder")
    assert_user_error(
        capsys, ["classify", "-m", models["classifier"], photos, "--labels", tmp_path / "labels.txt"],
        "labels.txt: no such labels file",
    )  # fmt: skip
    (tmp_path / "labels.bin").write_bytes(b"cat\n\xff\xfe\n")
    assert_user_error(
        capsys, ["classify", "-m", models["classifier"], photos, "--labels", tmp_path / "labels.bin"],
        "labels.bin: a labels file must be UTF-8 text (invalid start byte at byte 4)",
    )  # fmt: skip


def test_classify_a_folder_with_unreadable_files_goes_on(capsys, models, photos, tmp_path):
    """Ten good photos and one corrupt and one truncated file: ten results, two lines on stderr, exit 1."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for n, name in enumerate(["astronaut", "camera", "chelsea", "coffee", "rocket"]):
        image = Image.fromarray(getattr(data, name)())
        image.save(folder / f"{n}a_{name}.png")
        image.save(folder / f"{n}b_{name}.jpg")
    (folder / "2c_corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    whole = (folder / "2a_chelsea.png").read_bytes()
    (folder / "3c_truncated.png").write_bytes(whole[: len(whole) // 3])
    code, out, err = run(capsys, "classify", "-m", models["classifier"], folder, "--top-k", "1", "--batch-size", "4")
    assert code == 1
    classified = [Path(line).name for line in out.splitlines() if not line.startswith(" ")]
    assert len(classified) == 10 and "2c_corrupt.jpg" not in classified and "3c_truncated.png" not in classified
    lines = [line for line in err.splitlines() if "error:" in line]  # the others are the progress bar's
    assert len(lines) == 3 and "Traceback" not in err
    assert all(line.startswith("perceiver classify: error: ") for line in lines)
    assert "2c_corrupt.jpg: not a readable image" in lines[0] and "3c_truncated.png: not a readable image" in lines[1]
    assert lines[2] == "perceiver classify: error: 2 of 12 image(s) could not be read (see above); 10 classified"
    # The good files' results are those of a run on them alone.
    alone = run(capsys, "classify", "-m", models["classifier"], *sorted(folder.glob("?[ab]_*")), "--top-k", "1")[1]
    assert alone == out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["classify", "-m", "M", "x.png", "--top-k", "0"], "argument --top-k: 0 is less than 1"),
        (["classify", "-m", "M", "x.png", "--batch-size", "-2"], "argument --batch-size: -2 is less than 1"),
        (["classify", "-m", "M", "x.png", "--top-k", "two"], "argument --top-k: 'two' is not a whole number"),
        (["fill-mask", "-m", "M", "text", "--top-k", "0"], "argument --top-k: 0 is less than 1"),
        (["flow", "-m", "M", "a", "b", "-o", "o", "--arrow-step", "0"], "argument --arrow-step: 0 is less than 1"),
        (["flow", "-m", "M", "a", "b", "-o", "o", "--max-flow", "-1"], "argument --max-flow: -1 is not a positive"),
        (["flow", "-m", "M", "a", "b", "-o", "o", "--arrow-scale", "nan"], "--arrow-scale: nan is not a positive"),
        (["flow", "-m", "M", "a", "b", "-o", "o", "--overlap", "-1"], "argument --overlap: -1 is less than 0"),
        (["autoencode", "-m", "M", "v.avi", "-o", "o", "--chunks", "0"], "argument --chunks: 0 is less than 1"),
        (["autoencode", "-m", "M", "v.avi", "-o", "o", "--max-windows", "0"], "--max-windows: 0 is less than 1"),
        (["autoencode", "-m", "M", "v.avi", "-o", "o", "--top-k", "0"], "argument --top-k: 0 is less than 1"),
        (["classify", "x.png"], "the following arguments are required: -m/--model"),
        (["clasify"], "argument COMMAND: invalid choice: 'clasify'"),
    ],
)
def test_arguments_are_checked_and_refused_in_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and words in err, err
    assert err.startswith("perceiver") and "(see perceiver" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"perceiver_io {importlib.metadata.version('perceiver_io')}"


def test_a_mistyped_model_folder_is_no_such_folder_not_a_hub_id(capsys, models, photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for source, words in [
        ("runs/modle", "runs/modle: no such file or folder (runs/ is a folder here, so it is not read as a Hugging "
                       "Face hub id)"),
        ("./runs/modle", "./runs/modle: no such file or folder (nor a Hugging Face hub id, owner/name)"),
        ("modle", "modle: no such file or folder (nor a Hugging Face hub id, owner/name)"),
        ("a/b/c", "a/b/c: no such file or folder (nor a Hugging Face hub id, owner/name)"),
        ("runs/model.safetensors", "runs/model.safetensors: no such file or folder (nor a Hugging Face hub id, "
                                   "owner/name)"),
    ]:  # fmt: skip
        for argv in (["classify", "-m", source, photos], ["info", source], ["convert", source, "out"]):
            code, _, err = run(capsys, *argv)
            assert code == 2 and err.splitlines() == [f"perceiver {argv[0]}: error: {words}"], err


def test_a_model_file_that_is_not_a_checkpoint_is_named(capsys, models, photos):
    for argv in (["info", f"{models['flow']}/config.json"], ["classify", "-m", photos / "chelsea.png", photos]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and len(err.splitlines()) == 1
        assert "is a file; expected a model folder (config.json + weights) or a DeepMind checkpoint" in err


def test_a_hub_error_is_one_line(capsys, photos, monkeypatch):
    """Offline (the suite sets HF_HUB_OFFLINE), an owner/name id gets the hub's error, on one line."""
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "classify", "-m", "nobody-here/no-such-model", photos)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "could not fetch 'nobody-here/no-such-model' from the Hugging Face hub" in err


# ---------------------------------------------------------------------------------------------------------
# flow


def test_flow_stereo_motorcycle_with_ground_truth(capsys, models, tmp_path):
    left, right, gt = stereo_motorcycle_pair()
    Image.fromarray(left.astype(np.uint8)).save(tmp_path / "left.png")
    Image.fromarray(right.astype(np.uint8)).save(tmp_path / "right.png")
    write_flo(tmp_path / "gt.flo", gt)
    code, out, _ = run(
        capsys, "flow", "-m", models["flow_large"], tmp_path / "left.png", tmp_path / "right.png",
        "-o", tmp_path / "out" / "moto", "--gt", tmp_path / "gt.flo", "--show-gt", "--arrows",
    )  # fmt: skip
    assert code == 0
    flow = read_flo(tmp_path / "out" / "moto.flo")
    assert flow.shape == (500, 741, 2) and np.isfinite(flow).all()
    found = re.search(r"end-point error: ([\d.]+) px over (\d+) pixels with ground truth \((\d+) without", out)
    assert float(found[1]) == pytest.approx(end_point_error(flow, gt), abs=1e-3)
    assert int(found[2]) + int(found[3]) == 500 * 741 and int(found[3]) == np.isnan(gt[..., 0]).sum()
    for name in ("moto.png", "moto_gt.png", "moto_arrows.png"):
        with Image.open(tmp_path / "out" / name) as image:
            assert image.size == (741, 500) and image.mode == "RGB"


@pytest.mark.parametrize("unknown", ["inf", "middlebury"])
def test_flow_ground_truth_unknown_pixels_are_left_out_and_counted(capsys, models, tmp_path, unknown):
    """scikit-image's raw disparities mark unknown pixels inf; Middlebury's files use |value| > 1e9. Either way the
    error is the one over the known pixels, and the unknown ones are counted."""
    from skimage.data import stereo_motorcycle

    left, right, disparity = stereo_motorcycle()
    disparity = disparity[::8, ::8]  # 63x93: one tile
    unknown_mask = ~np.isfinite(disparity)
    assert 0 < unknown_mask.sum() < unknown_mask.size
    gt = np.stack([-disparity, np.zeros_like(disparity)], axis=-1).astype(np.float32)  # -inf where unknown
    if unknown == "middlebury":
        gt[unknown_mask] = 1e10
    write_flo(tmp_path / "gt.flo", gt)
    Image.fromarray(left[::8, ::8]).save(tmp_path / "l.png")
    Image.fromarray(right[::8, ::8]).save(tmp_path / "r.png")
    code, out, _ = run(capsys, "flow", "-m", models["flow_mid"], tmp_path / "l.png", tmp_path / "r.png", "-o",
                       tmp_path / "o", "--gt", tmp_path / "gt.flo")  # fmt: skip
    assert code == 0
    found = re.search(r"end-point error: ([\d.]+) px over (\d+) pixels with ground truth \((\d+) without", out)
    flow = read_flo(tmp_path / "o.flo")
    known = ~unknown_mask
    expected = np.hypot(*(flow[known] - gt[known]).T.astype(np.float64)).mean()
    assert float(found[1]) == pytest.approx(expected, abs=1e-3) and np.isfinite(expected)
    assert (int(found[2]), int(found[3])) == (known.sum(), unknown_mask.sum())

    write_flo(tmp_path / "none.flo", np.full_like(gt, np.nan))
    frames = [tmp_path / "l.png", tmp_path / "r.png"]
    argv = ["flow", "-m", models["flow_mid"], *frames, "-o", tmp_path / "o", "--gt", tmp_path / "none.flo"]
    assert_user_error(capsys, argv, "no pixel has ground truth")


def test_flow_arrows_are_visible_on_small_flows(capsys, models, tmp_path):
    """The random test model predicts flows of a fraction of a pixel: drawn at 1 px per pixel no arrow would show
    (the old picture equalled frame 1); the default scale makes the longest arrow 0.9 x the grid step."""
    image = data.astronaut()[100:164, 100:196]
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(np.roll(image, 2, axis=1)).save(tmp_path / "b.png")
    frames = [tmp_path / "a.png", tmp_path / "b.png"]
    argv = ["flow", "-m", models["flow_mid"], *frames, "-o", tmp_path / "f", "--arrows"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    flow = read_flo(tmp_path / "f.flo")
    grid = flow[8::16, 8::16]
    assert np.hypot(grid[..., 0], grid[..., 1]).max() < 1  # at scale 1 nothing would be drawn
    scale = float(re.search(r"arrows: (\d+) drawn, ([\d.e+-]+) px per pixel of flow", out)[2])
    assert scale * np.hypot(grid[..., 0], grid[..., 1]).max() == pytest.approx(0.9 * 16, rel=1e-3)
    with Image.open(tmp_path / "f_arrows.png") as drawn:
        changed = (np.asarray(drawn.convert("RGB")) != image).any(axis=-1).mean()
    assert changed > 0.01

    code, out, _ = run(capsys, *argv, "--arrow-scale", "1")
    assert code == 0 and "arrows: 0 drawn, 1 px per pixel of flow (all under 1 px)" in out
    with Image.open(tmp_path / "f_arrows.png") as drawn:
        assert np.array_equal(np.asarray(drawn.convert("RGB")), image)
    assert_user_error(capsys, [*argv[:-1], "--arrow-scale", "2"], "--arrow-scale needs --arrows")


def test_flow_file_holds_the_function_result(capsys, models, tmp_path):
    """Frames smaller than a tile and a .flo round trip: the file equals `optical_flow` in this process."""
    image = data.astronaut()[200:206, 200:210]
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(np.roll(image, 1, axis=0)).save(tmp_path / "b.png")
    code, out, _ = run(capsys, "flow", "-m", models["flow"], tmp_path / "a.png", tmp_path / "b.png", "-o",
                       tmp_path / "f.flo")  # fmt: skip
    assert code == 0 and "f.flo" in out and "f.png" in out
    expected = optical_flow(load_model(models["flow"]), tmp_path / "a.png", tmp_path / "b.png")
    np.testing.assert_array_equal(read_flo(tmp_path / "f.flo"), expected)


def test_flow_errors(capsys, models, tmp_path):
    Image.fromarray(data.camera()[:20, :30]).save(tmp_path / "a.png")
    Image.fromarray(data.camera()[:20, :31]).save(tmp_path / "b.png")
    flow = ["flow", "-m", models["flow"], tmp_path / "a.png"]
    assert_user_error(capsys, [*flow, tmp_path / "b.png", "-o", tmp_path / "o"], "the frames differ in size")
    assert_user_error(capsys, [*flow, tmp_path / "a.png", "-o", tmp_path / "o", "--show-gt"], "--show-gt needs --gt")
    write_flo(tmp_path / "gt.flo", np.zeros((5, 5, 2)))
    assert_user_error(
        capsys, [*flow, tmp_path / "a.png", "-o", tmp_path / "o", "--gt", tmp_path / "gt.flo"], "--gt flow is 5x5"
    )
    assert_user_error(capsys, [*flow, tmp_path / "z.png", "-o", tmp_path / "o"], "z.png: no such file")
    assert_user_error(
        capsys, [*flow, tmp_path / "a.png", "-o", tmp_path / "o", "--overlap", "8"],
        "--overlap 8 must be less than 8, the shorter side of the model's 8x12 tiles",
    )  # fmt: skip
    (tmp_path / "file").write_text("")
    argv = [*flow, tmp_path / "a.png", "-o", tmp_path / "file" / "o"]
    assert_user_error(capsys, argv, f"{tmp_path / 'file'} is a file, so the output folder")
    assert_user_error(
        capsys, ["flow", "-m", models["mlm"], tmp_path / "a.png", tmp_path / "a.png", "-o", tmp_path / "o"],
        "flow needs a PerceiverForOpticalFlow",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# autoencode


def test_autoencode_megamind(capsys, models, opencv_data, tmp_path):
    pytest.importorskip("av")
    names = (opencv_data / "dnn/action_recongnition_kinetics.txt").read_text().splitlines()[:5]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    code, out, _ = run(
        capsys, "autoencode", "-m", models["multimodal"], opencv_data / "Megamind.avi", "-o", tmp_path / "ae",
        "--max-windows", "3", "--labels", tmp_path / "labels.txt",
    )  # fmt: skip
    assert code == 0
    assert "3 clip(s) of 2 frames at 32x32 and 128 audio samples, decoded in 8 chunks each" in out
    video_psnr = float(re.search(r"video PSNR: ([-\d.]+) dB", out)[1])
    audio_psnr = float(re.search(r"audio PSNR: ([-\d.]+) dB", out)[1])
    assert np.isfinite([video_psnr, audio_psnr]).all()
    top = re.findall(r"^\s+\d\.\s+[\d.]+%\s+(\d+)\s+(.+)$", out, re.MULTILINE)
    assert len(top) == 5 and sorted(name for _, name in top) == sorted(names)
    assert all(names[int(index)] == name for index, name in top)

    assert "left out" not in out  # --max-windows stopped the reading: nothing was dropped
    with Image.open(tmp_path / "ae" / "reconstruction.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (32, 32)
        assert abs(gif.info["duration"] - 1000 / 23.976) <= 10  # GIF stores hundredths of a second
        durations = [gif.info["duration"] for _ in ImageSequence.Iterator(gif)]
    # 6 frames at 23.976 fps last 250.25 ms; rounding each to 40 ms (25 fps) would give 240.
    assert sum(durations) == 250 and set(durations) == {40, 50}
    with wave.open(str(tmp_path / "ae" / "reconstruction.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (48000, 1, 3 * 128)
    with Image.open(tmp_path / "ae" / "strip.png") as strip:
        assert strip.size == (6 * 96 + 5 * 2, 2 * 96 + 2)  # 6 frames enlarged 3x, input above reconstruction


@pytest.mark.slow  # decodes all of Megamind.avi (about 10 s on 2 cores); test_autoencode_without_audio is quick
def test_autoencode_megamind_says_which_frames_it_leaves_out(capsys, opencv_data, tmp_path):
    """The colab's geometry, 16 frames per clip: Megamind.avi's 270 frames make 16 clips and 14 frames left over."""
    pytest.importorskip("av")
    model = save_small(tmp_path / "mm16", "PerceiverForMultimodalAutoencoding", num_frames=16, image_size=2,
                       output_shape=[1, 16, 8, 8], audio_samples_per_frame=16)  # fmt: skip
    code, out, _ = run(capsys, "autoencode", "-m", model, opencv_data / "Megamind.avi", "-o", tmp_path / "ae",
                       "--chunks", "1")  # fmt: skip
    assert code == 0
    assert "16 clip(s) of 16 frames at 8x8" in out
    assert "left out: the last 14 of 270 frames, too few for a clip of 16" in out
    assert "reconstruction.gif (23.976 fps)" in out
    with Image.open(tmp_path / "ae" / "reconstruction.gif") as gif:
        total = sum(gif.info["duration"] for _ in ImageSequence.Iterator(gif))
    assert abs(total - 256 * 1000 / 23.976) <= 10


def test_autoencode_without_audio(capsys, models, tmp_path):
    frames = np.stack([np.roll(data.astronaut()[::10, ::10][:40, :40], k, axis=1) for k in range(3)])
    write_test_video(tmp_path / "silent.mkv", frames)
    argv = ["autoencode", "-m", models["multimodal"], tmp_path / "silent.mkv", "-o", tmp_path / "ae"]
    assert_user_error(capsys, argv, "silent.mkv has no audio track; pass --no-audio to use silence")
    assert "allow_silence" not in capsys.readouterr().err
    code, _, err = run(capsys, *argv)
    assert err.strip().endswith("has no audio track; pass --no-audio to use silence") and "allow_" not in err
    code, out, _ = run(capsys, *argv, "--no-audio", "--chunks", "2")
    assert code == 0 and "(silence)" in out and "decoded in 2 chunks" in out
    assert "left out: the last 1 of 3 frames, too few for a clip of 2" in out
    with wave.open(str(tmp_path / "ae" / "reconstruction.wav")) as wav:
        assert wav.getnframes() == 128


def test_autoencode_errors(capsys, models, photos, tmp_path, monkeypatch):
    assert_user_error(
        capsys, ["autoencode", "-m", models["flow"], photos / "chelsea.png", "-o", tmp_path], "autoencode needs a"
    )
    assert_user_error(
        capsys, ["autoencode", "-m", models["multimodal"], photos / "chelsea.png", "-o", tmp_path],
        "chelsea.png is a still image, not a video",
    )  # fmt: skip
    (tmp_path / "x.avi").write_text("not a video")
    assert_user_error(
        capsys, ["autoencode", "-m", models["multimodal"], tmp_path / "x.avi", "-o", tmp_path], "not a readable video"
    )
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    assert_user_error(
        capsys, ["autoencode", "-m", models["multimodal"], tmp_path / "x.avi", "-o", tmp_path],
        "reading video needs PyAV: pip install perceiver_io[video]",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# convert, info, and the installed console script


def test_convert_and_info(capsys, models, tmp_path):
    code, out, _ = run(capsys, "convert", models["flow"], tmp_path / "copy")
    assert code == 0 and out.startswith("wrote PerceiverForOpticalFlow (")
    original, copy = load_model(models["flow"]), load_model(tmp_path / "copy")
    for (name, a), (_, b) in zip(original.state_dict().items(), copy.state_dict().items(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), name
    assert_user_error(capsys, ["convert", models["flow"], tmp_path / "copy"], "pass --overwrite")
    assert run(capsys, "convert", models["flow"], tmp_path / "copy", "--overwrite")[0] == 0

    code, out, _ = run(capsys, "info", models["multimodal"])
    assert code == 0
    model = load_model(models["multimodal"])
    assert out.splitlines() == [
        "head: PerceiverForMultimodalAutoencoding",
        f"parameters: {sum(p.numel() for p in model.parameters()):,}",
        "latents: 8 x 32, 1 block(s) of 2 self-attention layers, 4 heads",
        "input/output: clips of 2 RGB frames of 32x32 in [0, 1], 128 mono audio samples (64 per frame) and 5 label "
        "slots (masked); returns the reconstructed video and audio and 5 class logits. Command: perceiver autoencode",
        "labels: 5 (0; 1; 2; …)",
        f"config: perceiver info {models['multimodal']} --full",
    ]
    code, full, _ = run(capsys, "info", models["multimodal"], "--full")
    assert code == 0 and full.startswith("\n".join(out.splitlines()[:-1]) + "\nconfig:\n{")
    assert json.loads(full.split("config:\n", 1)[1]) == json.loads(model.config.to_json_string(use_diff=False))


def test_info_of_a_released_size_classifier_is_a_summary(capsys, tmp_path):
    """1000 ImageNet names made `info` print over a thousand lines; the summary shows the count and the first three."""
    folder = save_small(tmp_path / "imagenet", "PerceiverForImageClassificationLearned", num_labels=1000)
    code, out, _ = run(capsys, "info", folder)
    assert code == 0 and len(out.splitlines()) == 6
    assert "labels: 1000 (tench, Tinca tinca; goldfish, Carassius auratus; great white shark, white shark, " in out


def test_console_script_smoke(models):
    script = Path(sys.executable).with_name("perceiver")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "perceiver_io.cli"]
    done = subprocess.run([*command, "info", models["flow"]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "head: PerceiverForOpticalFlow" in done.stdout and "8x12 tiles" in done.stdout
    done = subprocess.run([*command, "classify", "-m", models["flow"], "x.png"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "perceiver classify: error: classify needs a PerceiverForImageClassificationLearned or "
        "PerceiverForImageClassificationFourier or PerceiverForImageClassificationConvProcessing model; "
        "got a PerceiverForOpticalFlow"
    )
