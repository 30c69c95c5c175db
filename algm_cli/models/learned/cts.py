"""CTS, Content-aware Token Sharing (Lu et al., CVPR 2023; tue-mps/cts-segmenter) on Segmenter.

A policy network scores every 2 x 2 group of patches (a 32 x 32 pixel region) as "holds one
class"; per image the top-K groups (K = round(merge.setting x groups), a fixed count, so every
image of a batch has N - 3K tokens) share one token: the region downsampled to 16 x 16 and
embedded by the ViT's own patch embedding, with the mean of its four position embeddings. The
other patches stay ordinary tokens. The encoder runs on the shared sequence, the decoder on its
tokens, and every patch takes its token's class scores (one gather). CTS on ADE20K 512 shares
about 40% of the groups (1024 -> 715 tokens), on Cityscapes 768 58% (2304 -> 1296).

Policy network: timm backbone features at stride 32 + a 1 x 1 conv to 2 logits per region. The
released code uses ImageNet-pretrained efficientnet_lite0; `merge.policy.backbone` picks any
timm model (`efficientnet_lite0` by default) and `merge.policy.pretrained` whether to load its
ImageNet weights (false by default: offline machines cannot download them), or `small`: a five-
layer stride-2 CNN for quick CPU runs. Its target is the labels' class purity per region: 1 when
every labelled pixel of the region has one class, 0 otherwise, regions without labelled pixels
ignored. The released code trains the policy first (AdamW 5e-5) and freezes it; here it trains
jointly with the segmenter, its cross-entropy (weight merge.policy.loss_weight) part of the
training loss, sharing active during training. The grid must be even: images are padded to
multiples of 32.
"""

from __future__ import annotations

from collections.abc import Mapping

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...merge import MergeState
from ..base import MergeStats
from ..schedule import NO_MERGE
from ..segmenter import Segmenter
from ..blocks import resize_pos_embed
from ..vit import PATCH

GROUP = 2 * PATCH  # pixels per side of a 2 x 2 patch group


def small_cnn(width: int = 32) -> nn.Sequential:
    """Return a five-layer stride-2 CNN (3 -> width channels, stride 32) for quick runs."""
    layers, c_in = [], 3
    for c_out in (width // 2, width, width, width, width):
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
        c_in = c_out
    return nn.Sequential(*layers)


class PolicyNet(nn.Module):
    """Scores each 32 x 32 region: logits (B, 2, H/32, W/32), channel 1 = "one class"."""

    def __init__(self, backbone: str = "efficientnet_lite0", pretrained: bool = False) -> None:
        super().__init__()
        self.timm_features = backbone != "small"
        if backbone == "small":
            self.net, channels = small_cnn(), 32
        else:
            try:
                net = timm.create_model(backbone, pretrained=pretrained, features_only=True)
            except (RuntimeError, ValueError) as err:
                raise ValueError(f"merge.policy.backbone={backbone!r}: {err}") from None
            stride32 = [i for i, r in enumerate(net.feature_info.reduction()) if r == 32]
            if not stride32:
                raise ValueError(f"merge.policy.backbone={backbone!r} has no stride-32 features")
            net = timm.create_model(backbone, pretrained=pretrained, features_only=True,
                                    out_indices=(stride32[-1],))
            self.net = net
            channels = net.feature_info.channels()[-1]
        self.classify = nn.Conv2d(channels, 2, 1)

    def forward(self, images: Tensor) -> Tensor:
        """Return (B, 2, H/32, W/32) logits for images (B, 3, H, W), H and W multiples of 32."""
        features = self.net(images)
        return self.classify(features[0] if self.timm_features else features)


def purity_targets(labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Return (B, H/32, W/32) long: 1 one class, 0 several, ignore_index no labelled pixel."""
    lab = labels.float()[:, None]
    valid = lab != ignore_index
    high = F.max_pool2d(torch.where(valid, lab, torch.full_like(lab, -1.0)), GROUP)
    low = -F.max_pool2d(torch.where(valid, -lab, torch.full_like(lab, -1e9)), GROUP)
    any_valid = F.max_pool2d(valid.float(), GROUP) > 0
    target = (high == low).long()
    return torch.where(any_valid, target, torch.full_like(target, ignore_index))[:, 0]


def share_plan(scores: Tensor, grid: tuple[int, int], shared: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return (kept patches (B, N - 4K), shared groups (B, K), token of each patch (B, N)).

    scores (B, G): policy score per group (raster order over the (gh/2, gw/2) group grid).
    Tokens: the kept patches in raster order, then the shared groups in raster order.
    """
    B, G = scores.shape
    gh, gw = grid
    rows = torch.arange(gh, device=scores.device)[:, None] // 2
    cols = torch.arange(gw, device=scores.device)[None, :] // 2
    group_of = (rows * (gw // 2) + cols).flatten()  # (N,) group of each patch
    top = scores.topk(shared, dim=1).indices  # (B, K)
    is_shared = torch.zeros(B, G, dtype=torch.bool, device=scores.device)
    is_shared = is_shared.scatter(1, top, torch.ones_like(top, dtype=torch.bool))
    groups = torch.sort(top, dim=1).values  # (B, K) raster order
    patch_shared = is_shared[:, group_of]  # (B, N)
    order = torch.argsort(patch_shared.to(torch.int8), dim=1, stable=True)
    kept = order[:, : group_of.numel() - 4 * shared]  # (B, N - 4K) raster order
    n_kept = kept.shape[1]
    token = torch.empty_like(patch_shared, dtype=torch.long)
    token.scatter_(1, kept, torch.arange(n_kept, device=scores.device).expand(B, -1))
    rank = torch.zeros(B, G, dtype=torch.long, device=scores.device)
    rank.scatter_(1, groups, torch.arange(shared, device=scores.device).expand(B, -1) + n_kept)
    token = torch.where(patch_shared, rank[:, group_of], token)
    return kept, groups, token


class CTSSegmenter(Segmenter):
    """Segmenter with content-aware token sharing driven by a jointly trained policy network."""

    def __init__(self, share_fraction: float, policy: Mapping | None = None,
                 backbone: str = "vit_s", num_classes: int = 150, decoder: str = "mask",
                 img_size: int = 512, **segmenter_kwargs) -> None:
        super().__init__(backbone, num_classes, decoder, img_size, NO_MERGE, **segmenter_kwargs)
        if not 0.0 <= share_fraction <= 1.0:
            raise ValueError(f"CTS merge.setting={share_fraction}: the shared fraction of 2x2 "
                             "groups must lie in [0, 1]")
        policy = dict(policy or {})
        self.share_fraction = float(share_fraction)
        self.policy_weight = float(policy.get("loss_weight", 1.0))
        self.policy = PolicyNet(str(policy.get("backbone", "efficientnet_lite0")),
                                bool(policy.get("pretrained", False)))

    def _encode(self, padded: Tensor) -> tuple[Tensor, MergeState, tuple[int, int], Tensor, int]:
        """Return (tokens (B, N', C) normed, state, grid, policy logits, shared groups K)."""
        enc = self.encoder
        logits = self.policy(padded)  # (B, 2, gh/2, gw/2)
        B = padded.shape[0]
        patches = enc.patch_embed.proj(padded)  # (B, C, gh, gw)
        grid = (int(patches.shape[2]), int(patches.shape[3]))
        pos = resize_pos_embed(enc.pos_embed, grid)  # (1, 1 + N, C)
        x = patches.flatten(2).transpose(1, 2) + pos[:, 1:]
        coarse = enc.patch_embed.proj(F.interpolate(padded, scale_factor=0.5, mode="bilinear",
                                                    align_corners=False, antialias=True))
        C = coarse.shape[1]
        group_pos = F.avg_pool2d(pos[:, 1:].transpose(1, 2).reshape(1, C, *grid), 2)
        coarse = (coarse + group_pos).flatten(2).transpose(1, 2)  # (B, G, C)
        G = coarse.shape[1]
        shared = int(self.share_fraction * int(G) + 0.5)  # int(): shapes are tensors in tracing
        score = logits.float().softmax(1)[:, 1].flatten(1).detach()  # (B, G)
        kept, groups, token = share_plan(score, grid, shared)
        seq = torch.cat([x.gather(1, kept[..., None].expand(-1, -1, C)),
                         coarse.gather(1, groups[..., None].expand(-1, -1, C))], dim=1)
        cls = (enc.cls_token + pos[:, :1]).expand(B, -1, -1)
        h = torch.cat([cls, seq], dim=1)
        for blk in enc.blocks:
            h = blk(h)
        h = enc.norm(h)
        sizes = torch.ones(B, seq.shape[1], device=padded.device)
        sizes[:, kept.shape[1]:] = 4.0
        return h[:, 1:], MergeState(index=token, sizes=sizes), grid, logits, shared

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor, MergeStats]:
        """Return (logits (B, K, H, W), policy logits, stats)."""
        H, W = images.shape[-2:]
        pad_h, pad_w = (-H) % GROUP, (-W) % GROUP
        padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        tokens, state, (gh, gw), policy, shared = self._encode(padded)
        scores = state.unmerge(self.decoder(tokens))  # (B, N, K): one gather
        masks = scores.transpose(1, 2).reshape(images.shape[0], self.num_classes, gh, gw)
        masks = F.interpolate(masks, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return masks[..., :H, :W], policy, {"L0:cts": tokens.shape[1] / (gh * gw)}

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), {"L0:cts": tokens kept as a fraction of the patches})."""
        logits, _, stats = self._forward(images)
        return logits, stats

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
        """Return CE of the segmentation + policy_weight x CE of the policy on class purity."""
        logits, policy, _ = self._forward(images)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
        pad_h, pad_w = (-labels.shape[-2]) % GROUP, (-labels.shape[-1]) % GROUP
        padded = F.pad(labels, (0, pad_w, 0, pad_h), value=ignore_index)
        target = purity_targets(padded, ignore_index)
        policy_loss = F.cross_entropy(policy.float(), target, ignore_index=ignore_index)
        return loss + self.policy_weight * policy_loss.nan_to_num(0.0)
