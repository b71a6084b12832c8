"""Type stubs of the Rust extension behind `whisk` (use `whisk.WhisperModel`, not this)."""

from typing import Any, Dict, List, Optional, Tuple, TypedDict

__version__: str

class Outcome(TypedDict):
    transcript: str
    duration: float
    duration_after_vad: Optional[float]
    language_probs: List[Tuple[str, float]]

class Model:
    def __init__(
        self,
        path: str,
        device: str = "cpu",
        compute_type: str = "default",
        backend: Optional[str] = None,
        cpu_threads: int = 0,
        vad_model: Optional[str] = None,
    ) -> None: ...
    @property
    def is_multilingual(self) -> bool: ...
    @property
    def device_name(self) -> str: ...
    @property
    def model_dir(self) -> str: ...
    def transcribe(self, kind: str, data: Any, name: str, options: str) -> "Started": ...
    def transcribe_many(self, inputs: List[Tuple[str, Any, str]], options: str) -> List[Outcome]: ...
    def detect_language(self, kind: str, data: Any, name: str) -> List[Tuple[str, float]]: ...

def default_options() -> str: ...
def decode_audio(kind: str, data: Any, name: str) -> bytes: ...

class SegmentStream:
    def __iter__(self) -> "SegmentStream": ...
    def __next__(self) -> str: ...
    @property
    def done_seconds(self) -> float: ...

class Started(TypedDict):
    duration: float
    duration_after_vad: Optional[float]
    language: str
    language_probs: List[Tuple[str, float]]
    warnings: List[str]
    segments: SegmentStream
