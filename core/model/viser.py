"""VISER-CR: the full network (see docs/model.md for every design decision).

input (B, C, H, W) or (B, L, C, H, W), reference date at index 0
  -> reflect-pad to a multiple of max(4, mask_patch)
  -> 3x3 embedding to width C (per date)  [temporal: SpyNet flow * similarity warp, date fusion]
  -> encoder, 3 scales (C, 2C, 4C): Restormer blocks -> Adaptive Mask -> Patch Saliency Encoding
  -> Semantic Refinement across the 3 scales (SPFF, iterated)
  -> decoder: pixel-shuffle up, concat skip (+ score injection), 1x1 reduce, Restormer blocks
  -> 3x3 conv to out_bands + global residual: the input's first out_bands bands, or (residual_base="fill")
     a cloud-free estimate (1 - score)*x + score*fill(x), fill = push-pull completion of the clear pixels
  -> crop; score = mean of the 3 AM score maps, bilinearly up-sampled, in [0, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .adaptive_mask import AdaptiveMask, ScoreInjection
from .blocks import BilinearUpsample, ConcatLinear, Downsample, Upsample, conv3x3, stack
from .fill import harmonise_date, push_pull_composite, push_pull_fill, temporal_haze
from .morphology import close_holes
from .refinement import SemanticRefinement
from .saliency import PatchSaliencyEncoding
from .shadow import cloud_shadows
from .temporal import TemporalAlignment, TemporalFusion, flow_warp

__all__ = ["ViserCR"]

SCALES = 3
RESIDUAL_BASES = ("input", "fill")
FILL_GAIN, FILL_THRESHOLD = 40.0, 0.5  # cloud weight of the fill base = sigmoid(gain * (score - threshold))
UPSAMPLERS = {"shuffle": Upsample, "bilinear": BilinearUpsample}
# harmonise_dates: every stack, none, or only 8-bit display imagery (other dates' exports, other stretches)
HARMONISE_CHOICES = (False, True, "display")
# display_saturation: an 8-bit value of 254 or 255 (/ 255) in red, green and blue is saturated
SATURATED_DISPLAY = 254 / 255 - 1e-6
# reflectance_saturation: a visible band is clipped in a tile where at least CLIPPED_MIN_SHARE of its pixels sit
# within CLIPPED_TOLERANCE of its maximum there, and that maximum is at least CLIPPED_MIN_REFLECTANCE (a sensor's
# saturation, as Landsat TM / ETM+ over thick clouds). A pixel at the clipped
# level of a band and no darker than that level in red, green and blue (white and bright) is cloud
CLIPPED_MIN_SHARE, CLIPPED_TOLERANCE, CLIPPED_MIN_REFLECTANCE = 0.002, 1e-3, 0.2
# a wide-view prior (``forward(prior=...)``) counts where the tile sees little of its own ground: less than
# PRIOR_DAMP_CLEAR of the pixels within PRIOR_DAMP_RADIUS clear (``_own_support``). There it is a weak source of
# the fill under the clouds (up to PRIOR_WEIGHT, against 1 for a clear pixel) and the learned correction fades;
# elsewhere the tile is completed (all but) as without a prior
PRIOR_WEIGHT = 0.1
PRIOR_DAMP_RADIUS, PRIOR_DAMP_CLEAR = 32, 0.1
# display_dark_ground: how bright a tile's clear ground is, the brightness (mean of red, green, blue) below which
# DARK_GROUND_QUANTILE of the pixels the reflectance gate calls clear lie (an upper quantile, not the median: a
# dark sea beside bright land is ground that set the stretch), where they are at least DARK_GROUND_MIN_CLEAR of
# the tile (fewer: too little ground to tell)
DARK_GROUND_QUANTILE, DARK_GROUND_MIN_CLEAR = 0.9, 0.01
# ... and a pixel is raised only as far as it is brighter than that: not at all up to DARK_GROUND_BRIGHTER[0]
# above it, fully from DARK_GROUND_BRIGHTER[1] (a cloud's thin part is brighter than the dark ground it veils;
# dark ground the score calls half cloud, as on Landsat 5 exports, is not)
DARK_GROUND_BRIGHTER = (0.03, 0.08)
# display_black_ground: where that ground is darker still (an export whose stretch the clouds set, its ground in
# the lowest tenth of the range), the fill's last resort is the reflectance ground prior, not the display one:
# mid-grey ground is what a stretch makes of clear ground, not what such an export leaves of it. The learned
# correction fades there: no such export is in its training data. The score is not touched (raising dark pixels
# there as well called half the clear ground of a real Landsat 5 export cloud)
# display_black_cloud: on such a tile a pixel far brighter than that ground (by display_black_cloud[0], fully by
# [1]) is raised by the two gates' difference once more, so the display gate takes it from about a tenth of the
# score: the clouds set the stretch, and ground that much brighter than nine tenths of the tile's is rare, while
# a cloud's inner parts that the score calls half cloud would otherwise feed the fill as ground. Dark ground the
# score calls half cloud (a real Landsat 5 export) is not that much brighter, so it keeps its score


def _per_scale(value, name: str, count: int = SCALES) -> list[int]:
    """An int (same for every scale) or a list of ``count`` ints."""
    values = [int(value)] * count if isinstance(value, int) else [int(v) for v in value]
    if len(values) != count:
        raise ValueError(f"{name} needs {count} values (one per scale), got {value!r}")
    return values


def _per_sample(display: bool | torch.Tensor, for_display, otherwise):
    """``for_display`` where the input is 8-bit display imagery, else ``otherwise``: chosen once for a
    bool, per sample for a ``(B, 1, 1, 1)`` mask (values are floats or tensors of the batch's shape)."""
    if not isinstance(display, torch.Tensor):
        return for_display if display else otherwise
    if not isinstance(for_display, torch.Tensor):
        for_display = torch.tensor(for_display, dtype=torch.float32, device=display.device)
    return torch.where(display.to(for_display.device), for_display, otherwise)


def _brightness_ramp(name: str, value, rising: bool = False) -> tuple[float, float] | None:
    """``(start, full)`` brightnesses of a ``_ramp_down`` argument (start > full), or of a ``_ramp_up`` one
    (``rising``: start < full), both in (0, 1), checked."""
    if value is None:
        return None
    ramp = tuple(float(v) for v in value)
    low, high = (ramp[0], ramp[1]) if rising else (ramp[-1], ramp[0])
    if len(ramp) != 2 or not 0.0 < low < high < 1.0:
        order = "start < full" if rising else "start > full"
        raise ValueError(f"{name} needs two brightnesses, {order}, in (0, 1), got {value!r}")
    return ramp


def _ramp_down(value: torch.Tensor, start_full: tuple[float, float]) -> torch.Tensor:
    """0 at and above ``start``, 1 at and below ``full`` (< start), linear between."""
    start, full = start_full
    return ((start - value) / (start - full)).clamp(0.0, 1.0)


def _ramp_up(value: torch.Tensor, start_full: tuple[float, float]) -> torch.Tensor:
    """0 at and below ``start``, 1 at and above ``full`` (> start), linear between."""
    start, full = start_full
    return ((value - start) / (full - start)).clamp(0.0, 1.0)


def _clipped_white(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: the pixels of reflectance ``images`` (B, C, H, W; red, green, blue first) at a
    visible band's clipped level (``CLIPPED_*``: many pixels of the tile share the band's maximum) and no darker
    than that level in red, green and blue. A sensor that saturates over thick clouds (Landsat TM / ETM+: the
    blue band first) leaves flat, featureless cores there, which the score calls clear ground; bright ground is
    coloured, so it is darker than its brightest band's level in another band."""
    rgb = images[:, :3].float()
    top = rgb.amax(dim=(-2, -1), keepdim=True)  # (B, 3, 1, 1)
    at_top = rgb >= top - CLIPPED_TOLERANCE
    clipped = (at_top.flatten(2).float().mean(dim=2) >= CLIPPED_MIN_SHARE) & (top[..., 0, 0] >= CLIPPED_MIN_REFLECTANCE)
    white = rgb.amin(dim=1, keepdim=True) >= top - CLIPPED_TOLERANCE  # (B, 3, H, W): as bright as each band's top
    return (at_top & white & clipped[..., None, None]).any(dim=1, keepdim=True)


def _own_support(cloud: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` in [0, 1]: how much of a pixel's neighbourhood (``PRIOR_DAMP_RADIUS``) the tile itself
    sees clear, saturating at ``PRIOR_DAMP_CLEAR``. The learned correction was trained on tiles whose fill
    came from their own clear pixels (a tile all cloud: its own bright mean, which it learned to darken);
    where a wide-view prior fills instead, that correction would darken good ground, so it fades there."""
    step = 8  # the share of clear pixels is smooth: a box filter over an 8x coarser grid, up-sampled
    clear = F.avg_pool2d(1.0 - cloud.to(torch.float32), step, ceil_mode=True)
    radius = max(1, PRIOR_DAMP_RADIUS // step)
    clear = F.avg_pool2d(clear, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    clear = F.interpolate(clear, size=cloud.shape[-2:], mode="bilinear", align_corners=False)
    return (clear / PRIOR_DAMP_CLEAR).clamp(0.0, 1.0).to(cloud.dtype)


def _all_zero(*tensors: torch.Tensor) -> bool:
    """True when every tensor is exactly zero (a layer left at its zero initialisation); one device sync."""
    largest = torch.stack([t.detach().abs().amax().float() for t in tensors]).amax()
    return not bool(largest)  # a NaN weight is not zero


def _pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad the bottom/right of a 4-D tensor: reflect where the image is large enough, else replicate."""
    if not (pad_h or pad_w):
        return x
    h, w = x.shape[-2:]
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class ViserCR(nn.Module):
    """VISER-CR cloud-removal network. Every hyper-parameter is a keyword argument.

    ``forward(x) -> (image, score)``: ``image`` (B, out_bands, H, W) reflectance, ``score``
    (B, 1, H, W) in [0, 1], the cloud score of the reference date (1 = occluded).
    """

    def __init__(
        self,
        in_bands: int = 4,
        out_bands: int = 4,
        width: int = 16,
        blocks=(2, 2, 2),
        decoder_blocks=None,
        heads=(1, 2, 4),
        ffn_expansion: float = 2.66,
        bias: bool = False,
        refine_blocks=1,
        use_mask: bool = True,
        mask_ratio: float = 0.25,
        mask_patch: int = 8,
        use_pse: bool = True,
        use_sr: bool = True,
        sr_iterations: int = 2,
        num_frames: int = 1,
        use_flow: bool = True,
        flow_bands: int = 3,
        flow_downsample: int = 1,
        flow_weights: str | None = None,
        residual_base: str = "input",
        upsample: str = "shuffle",
        fill_gain: float = FILL_GAIN,
        fill_threshold: float = FILL_THRESHOLD,
        date_score_downsample: int = 2,
        harmonise_dates: bool | str = False,
        display_fill_threshold: float | None = None,
        haze_test: bool = False,
        display_saturation: bool = False,
        reflectance_saturation: bool = False,
        shadow_test: bool = False,
        shadow_nir_band: int | None = None,
        ground_prior=None,
        display_ground_prior=None,
        all_dates: bool = False,
        fill_holes: int | None = None,
        display_dark_ground=None,
        display_black_ground=None,
        display_black_cloud=None,
    ):
        super().__init__()
        if residual_base not in RESIDUAL_BASES:
            raise ValueError(f"residual_base must be one of {RESIDUAL_BASES}, got {residual_base!r}")
        if upsample not in UPSAMPLERS:
            raise ValueError(f"upsample must be one of {tuple(UPSAMPLERS)}, got {upsample!r}")
        blocks = _per_scale(blocks, "blocks")
        # the decoder has scales 1 and 2 (scale 3 is the encoder's bottom, shared by both paths)
        decoder_blocks = _per_scale(
            blocks[:-1] if decoder_blocks is None else decoder_blocks, "decoder_blocks", SCALES - 1
        )
        heads = _per_scale(heads, "heads")
        refine_blocks = _per_scale(refine_blocks, "refine_blocks")
        if mask_patch < 1 or mask_patch & (mask_patch - 1):
            raise ValueError(f"mask_patch must be a power of two, got {mask_patch}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if date_score_downsample < 1:
            raise ValueError(f"date_score_downsample must be >= 1, got {date_score_downsample}")
        if all_dates and num_frames < 2:
            raise ValueError("all_dates is for stack models (num_frames >= 2)")
        if harmonise_dates not in HARMONISE_CHOICES:
            raise ValueError(f"harmonise_dates must be true, false or 'display', got {harmonise_dates!r}")
        if display_fill_threshold is not None and not 0.0 < display_fill_threshold < 1.0:
            raise ValueError(f"display_fill_threshold must be in (0, 1), got {display_fill_threshold}")
        if fill_holes is not None and (fill_holes < 3 or fill_holes % 2 == 0):
            raise ValueError(f"fill_holes must be an odd width of at least 3 px, got {fill_holes}")
        display_dark_ground = _brightness_ramp("display_dark_ground", display_dark_ground)
        if display_dark_ground is not None and display_fill_threshold is None:
            raise ValueError("display_dark_ground moves the display gate: give display_fill_threshold too")
        display_black_ground = _brightness_ramp("display_black_ground", display_black_ground)
        if display_black_ground is not None:
            if ground_prior is None:
                raise ValueError("display_black_ground chooses between the ground priors: give ground_prior and "
                                 "display_ground_prior too")
        display_black_cloud = _brightness_ramp("display_black_cloud", display_black_cloud, rising=True)
        if display_black_cloud is not None and (display_black_ground is None or display_dark_ground is None):
            raise ValueError("display_black_cloud raises the score on black-ground tiles: give display_black_ground "
                             "and display_dark_ground too")
        self._arch = dict(
            in_bands=int(in_bands),
            out_bands=int(out_bands),
            width=int(width),
            blocks=blocks,
            decoder_blocks=decoder_blocks,
            heads=heads,
            ffn_expansion=float(ffn_expansion),
            bias=bool(bias),
            refine_blocks=refine_blocks,
            use_mask=bool(use_mask),
            mask_ratio=float(mask_ratio),
            mask_patch=int(mask_patch),
            use_pse=bool(use_pse),
            use_sr=bool(use_sr),
            sr_iterations=int(sr_iterations),
            num_frames=int(num_frames),
            use_flow=bool(use_flow),
            flow_bands=int(flow_bands),
            flow_downsample=int(flow_downsample),
            residual_base=residual_base,
            upsample=upsample,
            fill_gain=float(fill_gain),
            fill_threshold=float(fill_threshold),
            date_score_downsample=int(date_score_downsample),
        )
        if harmonise_dates:  # recorded only when on, so the cards of earlier weights still match
            self._arch["harmonise_dates"] = harmonise_dates
        self.harmonise_dates = harmonise_dates
        if haze_test:
            self._arch["haze_test"] = True
        self.haze_test = bool(haze_test)
        if display_saturation:
            self._arch["display_saturation"] = True
        self.display_saturation = bool(display_saturation)
        if reflectance_saturation:  # recorded only when on, as display_saturation
            self._arch["reflectance_saturation"] = True
        self.reflectance_saturation = bool(reflectance_saturation)
        if shadow_test:  # recorded only when on, as haze_test
            self._arch["shadow_test"] = True
        self.shadow_test = bool(shadow_test)
        if shadow_nir_band is not None:
            if not 3 <= shadow_nir_band < in_bands:
                raise ValueError(f"shadow_nir_band must index a band after red, green and blue, got {shadow_nir_band}")
            self._arch["shadow_nir_band"] = int(shadow_nir_band)
        self.shadow_nir_band = None if shadow_nir_band is None else int(shadow_nir_band)
        self._set_ground_priors(ground_prior, display_ground_prior, min(int(in_bands), int(out_bands)))
        if all_dates:  # recorded only when set: cards written before it still match
            self._arch["all_dates"] = True
        self.all_dates = bool(all_dates)
        if fill_holes is not None:  # recorded only when set, as all_dates
            self._arch["fill_holes"] = int(fill_holes)
        self.fill_holes = None if fill_holes is None else int(fill_holes)
        if display_fill_threshold is not None:  # recorded only when set, as harmonise_dates
            self._arch["display_fill_threshold"] = float(display_fill_threshold)
        self.display_fill_threshold = None if display_fill_threshold is None else float(display_fill_threshold)
        if display_dark_ground is not None:  # recorded only when set, as fill_holes
            self._arch["display_dark_ground"] = list(display_dark_ground)
        self.display_dark_ground = display_dark_ground
        if display_black_ground is not None:  # recorded only when set, as display_dark_ground
            self._arch["display_black_ground"] = list(display_black_ground)
        self.display_black_ground = display_black_ground
        if display_black_cloud is not None:  # recorded only when set, as display_black_ground
            self._arch["display_black_cloud"] = list(display_black_cloud)
        self.display_black_cloud = display_black_cloud
        self._display: bool | torch.Tensor = False  # use_radiometry()
        self.mask_adds = False  # use_mask_mode(): a user's cloud mask adds to the own score instead of replacing it
        self.residual_base = residual_base
        # The AM score is a mean of three maps and stays soft where they disagree; a soft weight keeps part
        # of every cloud in the base. A fixed steep gate makes it nearly binary (0.45 -> 0.12, 0.55 -> 0.88).
        self.fill_gain, self.fill_threshold = float(fill_gain), float(fill_threshold)
        # use_fill_threshold: a user's gate for both radiometries. The card's two gates stay as they are, so the
        # 8-bit raises of the score (sized by their difference) do too: a threshold moves the gate only
        self.user_threshold: float | None = None
        self.in_bands, self.out_bands, self.num_frames = in_bands, out_bands, num_frames
        self.flow_downsample = int(flow_downsample)
        self.date_score_downsample = int(date_score_downsample)
        self.multiple = max(2 ** (SCALES - 1), mask_patch)
        dims = [width * 2**j for j in range(SCALES)]
        patches = [max(1, mask_patch >> j) for j in range(SCALES)]

        self.embed = nn.Conv2d(in_bands, width, 3, padding=1, bias=bias)
        if num_frames > 1:
            self.align = TemporalAlignment(width, min(flow_bands, in_bands), use_flow)
            self.fusion = TemporalFusion(width)
            if flow_weights is not None and self.align.spynet is not None:
                self.align.spynet.load_weights(flow_weights)
        else:
            self.align = self.fusion = None

        self.encoder = nn.ModuleList(
            [stack(dims[j], blocks[j], heads[j], ffn_expansion, bias) for j in range(SCALES)]
        )
        self.down = nn.ModuleList([Downsample(dims[j]) for j in range(SCALES - 1)])
        self.mask = nn.ModuleList(
            [AdaptiveMask(dims[j], patches[j], mask_ratio, masking=use_mask) for j in range(SCALES)]
        )
        self.pse = (
            nn.ModuleList([PatchSaliencyEncoding(dims[j], patches[j]) for j in range(SCALES)])
            if use_pse
            else None
        )
        self.refine = (
            SemanticRefinement(dims, heads, sr_iterations, refine_blocks, ffn_expansion, bias)
            if use_sr and sr_iterations > 0
            else None
        )
        self.inject = nn.ModuleList([ScoreInjection(dims[j]) for j in range(SCALES)])
        self.up = nn.ModuleList([UPSAMPLERS[upsample](dims[j + 1]) for j in range(SCALES - 1)])
        self.reduce = nn.ModuleList(
            [ConcatLinear(dims[j], dims[j], dims[j], bias) for j in range(SCALES - 1)]
        )
        self.decoder = nn.ModuleList(
            [stack(dims[j], decoder_blocks[j], heads[j], ffn_expansion, bias) for j in range(SCALES - 1)]
        )
        self.output = nn.Conv2d(width, out_bands, 3, padding=1, bias=bias)
        nn.init.zeros_(self.output.weight)  # with the global residual the untrained network is the identity

    @property
    def arch(self) -> dict:
        """The constructor keyword arguments (JSON-serialisable) that rebuild this network."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._arch.items()}

    @property
    def dates_per_tile(self) -> int | None:
        """How many dates one forward takes: ``num_frames`` (the pipeline picks that many of a longer stack
        per tile), or any number (None) with ``all_dates``: every date the user gives fills the reference's
        clouds where its own score sees clear (the temporal prior weighs them; date fusion takes any count)."""
        return None if self.all_dates else self.num_frames

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Auxiliary losses of the last forward (none mandatory; see ``score_loss`` for the optional one)."""
        return {}

    # -- input handling ------------------------------------------------------------------------
    def _split_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the reference ``(B, C, H, W)`` and, for a temporal input, all dates ``(B, L, C, H, W)``."""
        if x.dim() == 5:
            frames, limit = x.shape[1], self.dates_per_tile
            if frames < 1:
                raise InputError("the stack has no date: pass the reference date at least")
            if limit is not None and frames > limit:
                raise InputError(
                    f"this model takes 1 to {limit} date(s), got {frames}; "
                    "pass fewer dates or use a model trained for more"
                )
            if x.shape[2] != self.in_bands:
                raise InputError(f"the model expects {self.in_bands} bands, got {x.shape[2]}")
            return x[:, 0], (x if frames > 1 else None)
        if x.dim() != 4:
            raise InputError(f"expected a (B, C, H, W) or (B, L, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_bands:
            raise InputError(f"the model expects {self.in_bands} bands, got {x.shape[1]}")
        return x, None

    def _embed(self, img: torch.Tensor) -> torch.Tensor:
        """3x3 embedding of ``(B, C, H, W)`` images into ``(B, H, W, width)`` tokens."""
        return conv3x3(img.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1), self.embed)

    def _date_score(self, feat: torch.Tensor) -> torch.Tensor:
        """The cloud score ``(B, 1, H, W)`` of one date from its embedding: the encoder and the three AM
        score heads, as for the reference, with the saliency encoding that feeds each scale's score into
        the next (no masking, no SR or decoder: the score needs neither)."""
        scores = []
        for j in range(SCALES):
            if j:
                feat = self.down[j - 1](feat)
            feat = self.encoder[j](feat)
            score = self.mask[j].score(feat)
            if self.pse is not None and j + 1 < SCALES:
                feat = self.pse[j](feat, score)
            scores.append(score)
        return self._score_map(scores, scores[0].shape[1:3])

    def date_cloud_weights(self, frames: torch.Tensor) -> torch.Tensor:
        """Each date's cloud weight ``(B, N, 1, H, W)`` for a stack ``(B, N, C, H, W)`` of any length: the
        cheap look at every date that chooses a long stack's context dates (no alignment: the dates are
        on one grid, flow residues are pixels)."""
        b, n, c, height, width = frames.shape
        return self._date_cloud(frames.reshape(b * n, c, height, width)).reshape(b, n, 1, height, width)

    def reference_cloud_weight(self, frames: torch.Tensor, date_clouds: torch.Tensor,
                               cloud: torch.Tensor | None = None) -> torch.Tensor:
        """The reference's cloud weight ``(B, 1, H, W)`` as the fill base takes it, for a stack ``(B, N, C,
        H, W)`` whose dates were scored already (``date_cloud_weights``): a user's mask as it is; else the
        reference's own score through the gate, raised where the temporal haze test finds haze
        (``haze_test``, reflectance only, as ``_residual``). The dates are taken unaligned (flow residues are
        pixels): this tells which date a pixel came from (the source-date raster), not the pixel itself."""
        if cloud is not None and not self.mask_adds:
            return cloud.to(frames.dtype)
        own = date_clouds[:, 0].to(frames.dtype)
        if self.haze_test and self.residual_base == "fill" and frames.shape[1] > 1:
            n = min(self.in_bands, self.out_bands)
            context = [(frames[:, index, :n], 1.0 - date_clouds[:, index].to(frames.dtype))
                       for index in range(1, frames.shape[1])]
            own = self._with_haze(frames[:, 0, :n], own, context)
        return own if cloud is None else torch.maximum(cloud.to(frames.dtype), own)

    def _users_cloud(self, cloud: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """A user's cloud mask as the fill base takes it: as it is, or with the network's own gated score
        added (``use_mask_mode``)."""
        if not self.mask_adds:
            return cloud
        return torch.maximum(cloud.to(score.dtype), self.cloud_weight(score))

    def _with_haze(self, ref: torch.Tensor, cloud: torch.Tensor, context) -> torch.Tensor:
        """The reference's cloud weight raised by the temporal haze test, on reflectance samples only."""
        return _per_sample(self._display_of(ref.shape[0]), cloud, temporal_haze(ref, cloud, context))

    def _date_cloud(self, images: torch.Tensor) -> torch.Tensor:
        """The cloud weight ``(B, 1, H, W)`` of dates ``(B, C, H, W)`` (their own score through the fill
        gate), scored at ``1/date_score_downsample`` resolution (a quarter of an encoder pass at 2; cloud
        scores are smooth) and up-sampled."""
        height, width = images.shape[-2:]
        full = images
        step = self.date_score_downsample
        if step > 1:
            images = F.avg_pool2d(images, step, ceil_mode=True)
        pad_h, pad_w = (-images.shape[-2]) % self.multiple, (-images.shape[-1]) % self.multiple
        score = self._date_score(self._embed(_pad(images, pad_h, pad_w)))[..., : images.shape[-2], : images.shape[-1]]
        if step > 1:
            score = F.interpolate(score, size=(height, width), mode="bilinear", align_corners=False)
        return self.cloud_weight(self._display_score(full, score.clamp(0.0, 1.0)))

    def _temporal_features(self, ref: torch.Tensor, frames: torch.Tensor | None, date_clouds=None):
        """Fused features ``(B, H, W, width)`` and, per context date, ``(aligned image, clear weight)``.

        A context date's clear weight is ``1 − cloud_weight`` of its own cloud score (``_date_cloud``: the
        same encoder, score heads and saliency encoding as the reference's, on the unaligned date at
        reduced resolution, or ``date_clouds[:, l]`` when the caller scored the dates already), then
        warped with the image by the date's flow.
        """
        ref_feat = self._embed(ref)
        if self.fusion is None:
            return ref_feat, []
        skip_alignment = self._skips_alignment()
        aligned, sims, context = [ref_feat], [torch.ones_like(ref_feat[..., :1])], []
        if frames is not None:
            for index in range(1, frames.shape[1]):
                img = frames[:, index]
                flow = None
                if not skip_alignment:
                    feat, sim, flow = self.align(ref, img, ref_feat, self._embed(img), self.flow_downsample)
                    aligned.append(feat)
                    sims.append(sim)
                if self.residual_base == "fill":
                    cloud = self._date_cloud(img) if date_clouds is None else date_clouds[:, index].to(img.dtype)
                    img, cloud = (img, cloud) if flow is None else (flow_warp(img, flow), flow_warp(cloud, flow))
                    context.append((img, 1.0 - cloud))
        if skip_alignment:
            return ref_feat, context
        return self.fusion(ref_feat, aligned, sims), context

    def _skips_alignment(self) -> bool:
        """Inference with a date fusion that returns the reference's features as they are (its merge exactly
        zero, no bias) and a flow that is exactly zero (SpyNet's last convs zero, or no SpyNet): the context
        dates' features, similarity and flow change nothing, so they are not computed. The bundled stack
        models are such networks (the temporal prior without a learned correction); training runs it all."""
        if torch.is_grad_enabled() or self.fusion is None or self.fusion.merge.bias is not None:
            return False
        spynet = self.align.spynet
        last_convs = [] if spynet is None else [level.basic_module[-1] for level in spynet.basic_module]
        return _all_zero(self.fusion.merge.weight, *(t for conv in last_convs for t in (conv.weight, conv.bias)))

    def _skips_correction(self) -> bool:
        """Inference with an output conv exactly zero (no bias): the correction is zero whatever the features,
        so the layers after the score (refinement, score injection, decoder) are not run."""
        return not torch.is_grad_enabled() and self.output.bias is None and _all_zero(self.output.weight)

    # -- network -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cloud: torch.Tensor | None = None,
                date_clouds: torch.Tensor | None = None,
                prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``cloud`` (B, 1, H, W) in [0, 1], optional: a user's cloud mask, which replaces the network's
        score in the fill base (``residual_base="fill"``; ignored otherwise). The score returned is
        always the network's own. ``date_clouds`` (B, L, 1, H, W), optional: ``date_cloud_weights(x)``
        when the caller has it already (the context dates are then not scored again). ``prior`` (B, C, H,
        W), optional (fill models): a cloud-free estimate of the tile from a wider view (the pipeline's
        overview of the whole raster), a weak source of the fill under the clouds (``PRIOR_WEIGHT``): a
        cloud larger than the tile is filled from the ground around it instead of the tile's own mean (or the
        typical ground of a model with a ground prior)."""
        correction, base, score, (height, width) = self._correction_and_base(x, cloud, date_clouds, prior)
        out = correction + base
        return out[:, :, :height, :width].contiguous(), score[:, :, :height, :width].contiguous()

    def completion_base(self, x: torch.Tensor, cloud: torch.Tensor | None = None,
                        prior: torch.Tensor | None = None):
        """``(base, score)``: the completion this network refines (the classical fill over its own score,
        with the context dates of a stack and a wide-view prior where given), cropped like the output."""
        _, base, score, (height, width) = self._correction_and_base(x, cloud, prior=prior)
        return base[:, :, :height, :width].contiguous(), score[:, :, :height, :width].contiguous()

    def _correction_and_base(self, x: torch.Tensor, cloud: torch.Tensor | None, date_clouds=None, prior=None):
        """The output conv's correction, the residual base and the score, all padded, and the crop size."""
        ref, frames = self._split_input(x)
        b, _, height, width = ref.shape
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        ref = _pad(ref, pad_h, pad_w)
        if cloud is not None:
            cloud = _pad(cloud.to(ref.dtype), pad_h, pad_w)
        if prior is not None:
            prior = _pad(prior.to(ref.dtype), pad_h, pad_w)
        if frames is not None and (pad_h or pad_w):
            n, dates = frames.shape[:2]
            frames = _pad(frames.flatten(0, 1), pad_h, pad_w).unflatten(0, (n, dates))
            if date_clouds is not None:
                date_clouds = _pad(date_clouds.flatten(0, 1), pad_h, pad_w).unflatten(0, (n, dates))

        feat, context = self._temporal_features(ref, frames, date_clouds)
        skips, scores = [], []
        for j in range(SCALES):
            if j:
                feat = self.down[j - 1](feat)
            feat = self.encoder[j](feat)
            feat, score = self.mask[j](feat)
            if self.pse is not None:
                feat = self.pse[j](feat, score)
            skips.append(feat)
            scores.append(score)
        if self._skips_correction():
            correction = ref.new_zeros(b, self.out_bands, *ref.shape[-2:])
        else:
            correction = self._decode(skips, scores)
        measured = self._with_saturation(ref, self._score_map(scores, ref.shape[-2:]))
        raised, black = self._display_raises(ref, measured)
        score = self._with_shadows(ref, raised)
        weight = self.cloud_weight(score) if cloud is None else self._users_cloud(cloud, score)
        own_score = cloud is None or self.mask_adds
        if prior is None and not self.has_ground_prior:
            return correction, self._residual(ref, weight, context, own_score=own_score), score, (height, width)
        support = _own_support(weight)
        if prior is not None:
            prior = (prior, PRIOR_WEIGHT * (1.0 - support))
        ground = self._ground(b, black)
        base = self._residual(ref, weight, context, own_score=own_score, prior=prior, ground=ground)
        if black is not None:  # such exports are not in the training data: the classical completion alone
            correction = correction * (1.0 - black.to(correction.dtype))
        # the correction was learned against a fill that fell back on the tile's own (bright) mean, which it
        # darkens; over a wide-view prior or the ground prior it would darken good ground, so it fades there
        correction = correction * support
        return correction, base, score, (height, width)

    def _decode(self, skips: list[torch.Tensor], scores: list[torch.Tensor]) -> torch.Tensor:
        """The learned correction ``(B, out_bands, H, W)`` from the encoder's features and scores per scale:
        semantic refinement, score injection, decoder and the output conv."""
        if self.refine is not None:
            skips = self.refine(skips)
        dec = self.inject[-1](skips[-1], scores[-1])
        for j in reversed(range(SCALES - 1)):
            dec = self.reduce[j](self.up[j](dec), self.inject[j](skips[j], scores[j]))
            dec = self.decoder[j](dec)
        return F.conv2d(dec.permute(0, 3, 1, 2), self.output.weight, self.output.bias, padding=1)

    def _residual(self, ref: torch.Tensor, cloud: torch.Tensor, context=(), own_score: bool = True,
                  prior: tuple | None = None, ground: torch.Tensor | None = None) -> torch.Tensor:
        """Global residual base (zeros for any output band beyond the input's).

        ``input``: the input's first ``out_bands`` bands, so the network must learn to subtract a cloud.
        ``fill``: a cloud-free estimate, the input where the score says clear and a push-pull completion
        of the clear pixels where it says cloud, so the untrained network already is a classical
        cloud-mask + inpainting pipeline and learns the correction over it (docs/model.md). A stack's
        reference also loses what the temporal haze test finds (``haze_test``, the network's own score
        only: a user's mask is taken as it is), and its context dates are harmonised to it
        (``harmonise_dates``) before they fill it. ``prior``: ``(image, weight)``, a wide-view prior and its
        weight (float or ``(B, 1, H, W)``) as a further source under the clouds (``_completion``). ``ground``:
        the typical ground where nothing is seen (``_ground``: by default each sample's radiometry's).
        """
        n = min(self.in_bands, self.out_bands)
        base = ref[:, :n]
        if self.residual_base == "fill":
            cloud = cloud.to(base.dtype)
            context = [(img[:, :n], c) for img, c in context]
            if context and self.haze_test and own_score:
                cloud = self._with_haze(base, cloud, context)
            if context and self.harmonise_dates:
                ref_clear = 1.0 - cloud
                harmonised = [harmonise_date(base, ref_clear, img, c) for img, c in context]
                if self.harmonise_dates == "display":
                    display = self._display_of(base.shape[0])
                    harmonised = [_per_sample(display, h, img) for h, (img, _) in zip(harmonised, context, strict=True)]
                context = [(h, c) for h, (_, c) in zip(harmonised, context, strict=True)]
            base = self._completion(base, cloud, context, None if prior is None else (prior[0][:, :n], prior[1]),
                                    self._ground(base.shape[0]) if ground is None else ground)
        if n == self.out_bands:
            return base
        return F.pad(base, (0, 0, 0, 0, 0, self.out_bands - n))

    @staticmethod
    def _completion(ref: torch.Tensor, cloud: torch.Tensor, context, prior: tuple | None = None,
                    ground: torch.Tensor | None = None) -> torch.Tensor:
        """The fill base: the reference where clear; under its clouds the context dates in proportion
        to how clear each is (shares normalised so they never exceed the cloud weight), a wide-view prior
        ``(image, weight)`` (where given) with that weight of what the dates leave, and the spatial
        push-pull completion for whatever no source sees (the temporal prior of a stack), falling back on the
        typical ``ground`` where given and nothing is seen at all."""
        if not context and prior is None:
            return push_pull_fill(ref, 1.0 - cloud, ground=ground)
        values, weights = [ref], [(1.0 - cloud)[:, None]]
        left = cloud[:, None]  # (B, 1, 1, H, W): the cloud weight the dates have not taken
        if context:
            clears = torch.stack([c.to(ref.dtype) for _, c in context], dim=1)  # (B, L-1, 1, H, W)
            shares = clears / clears.sum(dim=1, keepdim=True).clamp_min(1.0)
            values += [img for img, _ in context]
            weights.append(left * shares)
            left = left * (1.0 - shares.sum(dim=1, keepdim=True))
        if prior is not None:
            image, weight = prior
            values.append(image)
            weights.append(left * (weight[:, None] if isinstance(weight, torch.Tensor) else weight))
        return push_pull_composite(torch.stack(values, dim=1), torch.cat(weights, dim=1), ground=ground)

    def use_radiometry(self, display: bool | torch.Tensor) -> None:
        """Which gate the fill base uses from now on: ``fill_threshold`` for reflectance input, or
        ``display_fill_threshold`` (where the architecture has one) for 8-bit display imagery, whose
        stretch makes bright clear ground look like cloud to the score (docs/model.md). ``display`` is a
        bool for every sample, or a ``(B,)`` bool tensor, one per sample (training batches mix both)."""
        self._display = display if isinstance(display, torch.Tensor) else bool(display)

    def use_mask_mode(self, add: bool) -> None:
        """How a user's cloud mask (``forward(x, cloud)``) is taken from now on: ``add`` fills what the mask
        or the network's own gated score calls cloud (their maximum), else the mask alone decides."""
        self.mask_adds = bool(add)

    def use_fill_threshold(self, threshold: float) -> None:
        """One gate for both radiometries from now on (a user's threshold, a threshold sweep): the fill takes
        the pixels whose score is above ``threshold``. The score is not touched: the 8-bit raises keep the card's
        gates, so the card's own display gate given as a threshold changes nothing on 8-bit imagery."""
        self.user_threshold = float(threshold)

    def _set_ground_priors(self, reflectance, display, bands: int) -> None:
        """``ground_prior`` / ``display_ground_prior``: the typical clear ground (one value per filled band, for
        reflectance and for 8-bit display imagery) that the fill falls back on where a tile sees no ground at
        all (``fill.push_pull_composite``); with it the learned correction fades where the tile sees little
        of its own ground, as with a wide-view prior. Recorded in the architecture only when set."""
        priors = {}
        for name, value in (("ground_prior", reflectance), ("display_ground_prior", display)):
            if value is None:
                continue
            values = [float(v) for v in value]
            if len(values) != bands or not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"{name} needs {bands} values in [0, 1] (one per filled band), got {value!r}")
            self._arch[name] = values
            priors[name] = torch.tensor(values)
        if len(priors) == 1:
            raise ValueError("give ground_prior and display_ground_prior together (one for each radiometry)")
        self.has_ground_prior = bool(priors)
        for name, value in priors.items():  # buffers, so they follow the model's device; not in the state dict
            self.register_buffer(name, value, persistent=False)

    def _ground(self, batch: int, black: torch.Tensor | None = None) -> torch.Tensor | None:
        """The ground prior for a batch, ``(1 or batch, bands)`` by each sample's radiometry, or None. ``black``
        ``(batch, 1, 1, 1)`` in [0, 1] (``_black_ground``): how far a display sample takes the reflectance prior."""
        if not self.has_ground_prior:
            return None
        display = self._display_of(batch)
        if not isinstance(display, torch.Tensor):
            ground = (self.display_ground_prior if display else self.ground_prior)[None]
        else:
            ground = torch.where(display.reshape(batch, 1).to(self.ground_prior.device),
                                 self.display_ground_prior[None], self.ground_prior[None])
        if black is None:
            return ground
        return ground + black.reshape(batch, 1).to(ground.dtype) * (self.ground_prior[None] - ground)

    def _display_of(self, batch: int) -> bool | torch.Tensor:
        """``use_radiometry``'s choice for a batch: a bool, or ``(batch, 1, 1, 1)`` per sample (a batch of
        ``B·L`` dates takes each sample's value ``L`` times)."""
        display = self._display
        if not isinstance(display, torch.Tensor):
            return display
        display = display.reshape(-1).bool()
        if batch != display.numel():
            display = display.repeat_interleave(batch // display.numel())
        return display.reshape(batch, 1, 1, 1)

    def _display_score(self, images: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """The score ``(B, 1, H, W)`` as the gate takes it on 8-bit display imagery ``images`` (B, C, H, W): the
        saturation test, then the dark-ground and black-cloud tests. Reflectance samples are left as they are."""
        return self._display_raises(images, self._with_saturation(images, score))[0]

    def _display_raises(self, images: torch.Tensor, measured: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(score, black)``: ``measured`` raised by the dark-ground and black-cloud tests, and how black each
        tile's clear ground is (``_black_ground``). The tile's clear ground is measured once for both."""
        clear_ground = None
        if (self.display_dark_ground is not None or self.display_black_ground is not None) and measured.shape[0]:
            if self._display_of(images.shape[0]) is not False:
                clear_ground = self._clear_ground(images, measured)
        score = self._with_dark_ground(images, measured, clear_ground)
        black = self._black_ground(images, measured, clear_ground)
        return self._with_black_cloud(score, black, clear_ground), black

    def _with_black_cloud(self, score: torch.Tensor, black: torch.Tensor | None, clear_ground) -> torch.Tensor:
        """``display_black_cloud`` ``(start, full)``: on a black-ground display tile (``black``), the score of a
        pixel brighter than the tile's clear ground by more than ``start`` (fully by ``full``) is raised by the
        two gates' difference once more (the dark-ground test has raised it once)."""
        if self.display_black_cloud is None or black is None or clear_ground is None:
            return score
        ground, brightness = clear_ground
        brighter = _ramp_up(brightness - ground, self.display_black_cloud)
        lift = self.display_fill_threshold - self.fill_threshold
        return (score + (black * lift * brighter).to(score.dtype)).clamp(max=1.0)

    def _with_dark_ground(self, images: torch.Tensor, score: torch.Tensor, clear_ground=None) -> torch.Tensor:
        """``display_dark_ground`` ``(start, full)``: the display gate is stricter than the reflectance gate
        because a stretch makes bright clear ground look like cloud. Where the clouds set the stretch (a
        real export of a cloudy scene), the ground is pushed down and a cloud's thinner parts sit mid-grey,
        below the display gate. So on a display tile whose clear ground is dark (nine tenths of the pixels the
        reflectance gate calls clear below a brightness that is below ``start``, fully at ``full``) the score
        is raised by up to the two gates' difference, and the display gate takes what the reflectance gate
        would — where the pixel is brighter than that ground (``DARK_GROUND_BRIGHTER``): the score also calls
        some dark ground half cloud. The raise eases in over the gate's width below the reflectance gate, so
        clear ground keeps its score (the score raster, keep-clear and the cloud share follow the gate)."""
        if self.display_dark_ground is None or score.shape[0] == 0:
            return score
        display = self._display_of(images.shape[0])
        lift = self.display_fill_threshold - self.fill_threshold
        if display is False or lift <= 0.0:  # reflectance, or a card without a stricter display gate
            return score
        ground, brightness = clear_ground or self._clear_ground(images, score)
        dark = _ramp_down(ground, self.display_dark_ground)
        width = 4.0 / self.fill_gain  # the gate's half width: sigmoid(4) = 0.98
        in_gate = ((score - (self.fill_threshold - 2.0 * width)) / width).clamp(0.0, 1.0)
        brighter = _ramp_up(brightness - ground, DARK_GROUND_BRIGHTER)
        raised = (score + (dark * lift * brighter).to(score.dtype) * in_gate).clamp(max=1.0)
        return _per_sample(display, raised, score)

    def _clear_ground(self, images: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ground, brightness)``: how bright each tile's clear ground is (``(B, 1, 1, 1)``, the brightness below
        DARK_GROUND_QUANTILE of the pixels the reflectance gate calls clear; 1 where fewer than
        DARK_GROUND_MIN_CLEAR of the tile are, too little ground to tell) and each pixel's brightness (the mean
        of red, green and blue)."""
        # a pixel black in R, G and B is no ground to measure: the pipeline's nodata (a scene's collar) reaches
        # the network as 0, and would make bright ground beside it look like a dark-ground tile
        rgb = images[:, :3]
        clear = (score < self.fill_threshold) & (rgb.amax(dim=1, keepdim=True) > 0)
        brightness = rgb.float().mean(dim=1, keepdim=True)
        ground = torch.where(clear, brightness, torch.nan).flatten(1).nanquantile(DARK_GROUND_QUANTILE, dim=1)
        ground = ground.nan_to_num(nan=1.0).reshape(-1, 1, 1, 1)  # no clear pixel: no dark ground
        enough = clear.flatten(1).float().mean(dim=1).reshape(-1, 1, 1, 1) >= DARK_GROUND_MIN_CLEAR
        return torch.where(enough, ground, torch.ones_like(ground)), brightness

    def _black_ground(self, images: torch.Tensor, score: torch.Tensor, clear_ground=None) -> torch.Tensor | None:
        """``(B, 1, 1, 1)`` in [0, 1]: how black each display tile's clear ground is (``display_black_ground``;
        0 on reflectance samples), or None where the model has no such test or the batch is all reflectance. As
        far as it is, the fill falls back on the reflectance ground prior and the learned correction fades."""
        if self.display_black_ground is None or not self.has_ground_prior or score.shape[0] == 0:
            return None
        display = self._display_of(images.shape[0])
        if display is False:
            return None
        black = _ramp_down((clear_ground or self._clear_ground(images, score))[0], self.display_black_ground)
        return black if display is True else black * display.to(black.dtype)

    def _with_saturation(self, images: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """``score`` (B, 1, H, W) raised to 1 where ``images`` (B, C, H, W) are saturated: 8-bit display imagery
        saturated in red, green and blue (``display_saturation``), reflectance at a visible band's clipped level
        and no darker in the others (``reflectance_saturation``, ``_clipped_white``). Such a pixel keeps nothing
        of the ground (the core of a thick cloud), so the fill replaces it and no date takes it as ground,
        whatever the score says (the score misses clouds that fill most of a tile, and flat saturated cores)."""
        if not (self.display_saturation or self.reflectance_saturation):
            return score
        display = self._display_of(images.shape[0])
        raised = score
        if self.display_saturation and display is not False:
            saturated = (images[:, :3] >= SATURATED_DISPLAY).all(dim=1, keepdim=True).to(score.dtype)
            raised = _per_sample(display, torch.maximum(score, saturated), score)
        if self.reflectance_saturation and display is not True:
            clipped = _clipped_white(images).to(score.dtype)
            raised = _per_sample(display, raised, torch.maximum(raised, clipped))
        return raised

    def _with_shadows(self, ref: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """``shadow_test``: the shadows of the clouds the score finds score 1 too (``shadow.cloud_shadows``),
        so the fill replaces them, keep-clear leaves them filled and the score raster shows them."""
        if not self.shadow_test:
            return score
        found = cloud_shadows(ref, self.cloud_weight(score), self.shadow_nir_band, self._display_of(ref.shape[0]))
        return torch.maximum(score, found)

    def _gate_threshold(self, batch: int) -> float | torch.Tensor:
        """The gate's threshold for a batch: a float, or ``(batch, 1, 1, 1)`` per sample."""
        if self.user_threshold is not None:
            return self.user_threshold
        if self.display_fill_threshold is None:
            return self.fill_threshold
        return _per_sample(self._display_of(batch), self.display_fill_threshold, self.fill_threshold)

    def cloud_weight(self, score: torch.Tensor) -> torch.Tensor:
        """The weight of the fill in the base: the score through a steep gate (fill models), with the clear
        holes inside clouds closed (``fill_holes``)."""
        if self.residual_base != "fill":
            return score
        threshold = self._gate_threshold(score.shape[0])
        if isinstance(threshold, torch.Tensor):
            threshold = threshold.to(score.device, score.dtype)
        weight = torch.sigmoid(self.fill_gain * (score - threshold))
        return weight if self.fill_holes is None else close_holes(weight, self.fill_holes)

    @staticmethod
    def _score_map(scores: list[torch.Tensor], size) -> torch.Tensor:
        """Mean of the per-scale AM score maps, up-sampled to full resolution: ``(B, 1, H, W)``."""
        total = scores[0].permute(0, 3, 1, 2)
        for s in scores[1:]:
            total = total + F.interpolate(
                s.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False
            )
        return (total / len(scores)).clamp(0.0, 1.0)
