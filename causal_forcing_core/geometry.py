"""The one statement of the Wan 2.1 video geometry: strides, frame rate, trained length, the size rule and the
conversions between pixel frames, latent frames and chunks.

The Wan 2.1 VAE maps ``1 + 4k`` video frames to ``1 + k`` latent frames (the first frame alone, then 4 frames per
latent) and every 8x8 pixels to one latent; the DiT then patches latents 2x2, so a pixel size must be a multiple
of ``8 * 2 = 16``. The students were trained on 21 latent frames (81 video frames, 5 s at 16 fps) with attention
over the whole video.

Everything that needs one of these numbers asks :data:`WAN21` (the core, the command line and the nodes); nothing
else writes them down.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInputError


@dataclass(frozen=True)
class VideoGeometry:
    """Strides and timing of a video latent space, with the checks and conversions built on them."""

    #: pixels per latent row/column
    spatial_stride: int = 8
    #: video frames per latent frame after the first
    temporal_stride: int = 4
    #: frames per second the models were trained at
    fps: int = 16
    #: latent frames the students were trained to attend to with global attention
    trained_latent_frames: int = 21

    # ----------------------------------------------------------------------------------------------- size
    def size_multiple(self, patch: tuple[int, int] = (2, 2)) -> int:
        """The step of valid pixel heights/widths for a DiT with spatial ``patch`` (16 for Wan's 2x2)."""
        return self.spatial_stride * max(patch)

    def size_problems(
        self, height: int, width: int, multiple: int, max_size: int | None = None
    ) -> list[str]:
        """What is wrong with a pixel size, one phrase per bad side (empty when both are fine), e.g.
        ``"width 72 is not a multiple of 16 (try 64 or 80)"``."""
        problems = []
        for name, value in (("height", height), ("width", width)):
            if value < multiple:
                problems.append(f"{name} {value} is below the smallest size, {multiple}")
            elif max_size is not None and value > max_size:
                problems.append(f"{name} {value} is above the largest size, {max_size}")
            elif value % multiple:
                low = value // multiple * multiple
                problems.append(f"{name} {value} is not a multiple of {multiple} (try {low} or {low + multiple})")
        return problems

    def check_size(self, height: int, width: int, multiple: int, what: str = "Height and width") -> None:
        """Raise :class:`InvalidInputError` naming the nearest valid sizes unless both sides are positive
        multiples of ``multiple`` pixels."""
        problems = self.size_problems(height, width, multiple)
        if problems:
            raise InvalidInputError(
                f"{what} must be positive multiples of {multiple} pixels: {'; '.join(problems)}."
            )

    def latent_size(self, height: int, width: int, patch: tuple[int, int] = (2, 2)) -> tuple[int, int]:
        """Pixel (height, width) -> latent (rows, columns), checked against :meth:`size_multiple`."""
        self.check_size(height, width, self.size_multiple(patch))
        return height // self.spatial_stride, width // self.spatial_stride

    def pixel_size(self, latent_height: int, latent_width: int) -> tuple[int, int]:
        """Latent (rows, columns) -> pixel (height, width)."""
        return latent_height * self.spatial_stride, latent_width * self.spatial_stride

    # ----------------------------------------------------------------------------------------------- time
    def check_pixel_frames(self, pixel_frames: int, what: str = "The video") -> None:
        """Raise :class:`InvalidInputError` unless ``pixel_frames`` is ``1 + 4k`` (what the VAE codes)."""
        s = self.temporal_stride
        if pixel_frames < 1 or (pixel_frames - 1) % s:
            low = max(1, (pixel_frames - 1) // s * s + 1)
            raise InvalidInputError(
                f"{what} has {pixel_frames} frames; the Wan VAE codes 1 + {s}k frames: use {low} or {low + s}."
            )

    def latent_frames(self, pixel_frames: int, what: str = "The video") -> int:
        """``1 + 4k`` video frames -> ``1 + k`` latent frames (checked)."""
        self.check_pixel_frames(pixel_frames, what)
        return 1 + (pixel_frames - 1) // self.temporal_stride

    def pixel_frames(self, latent_frames: int) -> int:
        """``1 + k`` latent frames -> ``1 + 4k`` video frames (0 latent frames -> 0)."""
        return 0 if latent_frames <= 0 else 1 + (latent_frames - 1) * self.temporal_stride

    def added_pixel_frames(self, latent_frames: int) -> int:
        """Video frames that ``latent_frames`` more latent frames add to a running video (4 each)."""
        return latent_frames * self.temporal_stride

    def chunk_seconds(self, frames_per_block: int) -> float:
        """Seconds of video one chunk adds at :attr:`fps`."""
        return self.added_pixel_frames(frames_per_block) / self.fps

    def seconds_to_chunks(self, seconds: float, frames_per_block: int) -> int:
        """Whole chunks covering at least ``seconds`` of video (at least one)."""
        return max(1, int(-(-(seconds * self.fps) // self.added_pixel_frames(frames_per_block))))


#: The Wan 2.1 VAE and the students built on it.
WAN21 = VideoGeometry()
