"""Released students that run on this pack's causal Wan 2.1-1.3B code, by short name.

Each entry says where the weights live on the Hugging Face hub, which weights of a release ``.pt`` to take, the
sampler preset (:data:`.config.SAMPLER_PRESETS`) the student was distilled for, the LoRA its release adds on top of
the base weights (LongLive), and how a run should attend and switch prompts by default: the local attention
window and sink (latent frames; 0 = attention over the whole video) and the re-cache mode of a prompt switch.

Every value was read from the student's own released config or inference code; ``docs/student_presets.md`` gives
the repository, commit, file and line of each one, and lists the students that are not offered here and why.
A student is offered only when our code reproduces its sampler: the same steps, shift, warp, block size, context
timestep and attention (absolute RoPE positions, a fixed sink of the first frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from .config import SamplerConfig, sampler_preset
from .errors import CheckpointError
from .kv_cache import Recache

if TYPE_CHECKING:
    from .lora import Lora

#: the Causal Forcing release (reference §3.2)
CAUSAL_FORCING_REPO = "zhuhz22/Causal-Forcing"
#: the sampler of a student whose file and name do not say (the released chunk-wise student's)
DEFAULT_SAMPLER = "chunkwise-4step"


@dataclass(frozen=True)
class StudentLora:
    """The LoRA a student's release adds to its base weights: its file in the student's repo and the rank and
    alpha of the adapter config it was trained with (the delta is ``alpha / rank * up @ down``)."""

    filename: str
    rank: int
    alpha: float

    def strength_for(self, lora: "Lora") -> float:
        """The strength that gives this adapter's ``alpha / rank`` scale to ``lora`` as read from its file.

        A file that records alpha (per layer or in its metadata) is already scaled: 1.0. A file without one (the
        LongLive ``lora.pt`` layout) is read with alpha = rank, so the recorded alpha comes in as the strength.
        Raises CheckpointError when a layer's rank is not the recorded one (another file than the release's)."""
        ranks = sorted({layer.rank for layer in lora.layers.values()})
        if ranks != [self.rank]:
            raise CheckpointError(
                f"The LoRA {lora.name} has rank {', '.join(map(str, ranks))}, but the student's release "
                f"({self.filename}) has rank {self.rank}. Download it again (delete the file and pass --download)."
            )
        if any(layer.alpha is not None for layer in lora.layers.values()):
            return 1.0
        return self.alpha / self.rank


@dataclass(frozen=True)
class StudentRelease:
    """A released student: its weight file in ``repo``, the sampler preset it runs with (``variant``), which
    weights of a release ``.pt`` to take (``prefer_ema``: ``generator_ema`` or ``generator``), its release LoRA,
    and its default window, sink (latent frames) and re-cache mode."""

    filename: str
    variant: str
    prefer_ema: bool
    repo: str = CAUSAL_FORCING_REPO
    lora: StudentLora | None = None
    window_frames: int = 0
    sink_frames: int = 0
    recache: Recache = Recache.OFF
    #: what it is, in a few words (the command line's --help)
    title: str = ""

    @property
    def sampler(self) -> SamplerConfig:
        return sampler_preset(self.variant)

    def files(self) -> list[tuple[str, str]]:
        """(repo, file) of everything the student's weights need: the weights, then the LoRA."""
        return [(self.repo, self.filename)] + ([(self.repo, self.lora.filename)] if self.lora else [])


#: Released students by short name. The first five are Causal Forcing's own (reference §3.2); the others run the
#: same backbone with the settings of their own releases (docs/student_presets.md).
STUDENTS: dict[str, StudentRelease] = {
    "chunkwise": StudentRelease("chunkwise/causal_forcing.pt", "chunkwise-4step", prefer_ema=False,
                                title="Causal Forcing, chunk-wise 4-step"),
    "framewise": StudentRelease("framewise/causal_forcing.pt", "framewise-4step", prefer_ema=True,
                                title="Causal Forcing, frame-wise 4-step"),
    "framewise-2step": StudentRelease("causal-forcing++/framewise-2step.pt", "framewise-2step", prefer_ema=True,
                                      title="Causal Forcing++, frame-wise 2-step"),
    "framewise-1step": StudentRelease("causal-forcing++/framewise-1step.pt", "framewise-1step", prefer_ema=True,
                                      title="Causal Forcing++, frame-wise 1-step"),
    "longvideo": StudentRelease("chunkwise/longvideo.pt", "rolling-4step", prefer_ema=True,  # trained for it
                                title="Causal Forcing long video, Rolling Forcing 4-step"),
    "longlive": StudentRelease(
        "models/longlive_base.pt", "chunkwise-4step", prefer_ema=False, repo="Efficient-Large-Model/LongLive-1.3B",
        lora=StudentLora("models/lora.pt", rank=256, alpha=256.0), window_frames=12, sink_frames=3,
        recache=Recache.RECENT, title="LongLive 1.3B, base weights + LoRA, chunk-wise 4-step",
    ),
    "self-forcing": StudentRelease("checkpoints/self_forcing_dmd.pt", "chunkwise-4step", prefer_ema=True,
                                   repo="gdhe17/Self-Forcing", title="Self Forcing (DMD), chunk-wise 4-step"),
    "rolling-forcing": StudentRelease("checkpoints/rolling_forcing_dmd.pt", "rolling-5step", prefer_ema=True,
                                      repo="TencentARC/RollingForcing", title="Rolling Forcing, 5-step window"),
    "causvid": StudentRelease("autoregressive_checkpoint/model.pt", "causvid-3step", prefer_ema=False,
                              repo="tianweiy/CausVid", title="CausVid, chunk-wise 3-step, shift 8"),
}


#: words in a file name that stand for a student under another spelling (normalised: lower case, ``_`` -> ``-``)
_NAME_ALIASES = {"long-video": "longvideo", "selfforcing": "self-forcing", "rollingforcing": "rolling-forcing",
                 "frame-wise": "framewise", "chunk-wise": "chunkwise"}


def _student_in(text: str) -> str | None:
    """The longest short name of :data:`STUDENTS` in ``text`` (normalised first), or None."""
    lowered = text.lower().replace("_", "-").replace(" ", "-")
    for alias, canonical in _NAME_ALIASES.items():
        lowered = lowered.replace(alias, canonical)
    if "framewise" in lowered:  # the step count may stand anywhere in the name
        for steps in ("1step", "2step"):
            if steps in lowered:
                lowered += f" framewise-{steps}"
    found = [key for key in STUDENTS if key in lowered]
    return max(found, key=len) if found else None


def student_for_file(name: str) -> tuple[str, StudentRelease] | None:
    """The released student a weight file is, judged by its name (a release ``.pt`` carries no metadata): the
    short name of :data:`STUDENTS` the file's own name contains, else its folders (``chunkwise/longvideo.pt`` is
    the long-video student, ``framewise/causal_forcing.pt`` the frame-wise one, ``longlive_base.pt`` LongLive,
    ``self_forcing_dmd.pt`` Self Forcing, ``cf_framewise_tiny_1step`` the 1-step one); the longest match wins.
    ``(short name, release)``, or None when the name says nothing."""
    path = PurePosixPath(name.replace("\\", "/"))
    key = _student_in(path.name) or _student_in(path.as_posix())
    return (key, STUDENTS[key]) if key else None
