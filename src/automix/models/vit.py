"""Vision transformers: ``vit_tiny`` and ``vit_small``, the DeiT-Ti / DeiT-S shapes (ViT arXiv:2010.11929,
DeiT arXiv:2012.12877), with a CIFAR default (32 px, patch 4: 8 x 8 tokens) and the ImageNet setting
(``img_size=224, patch_size=16``: 14 x 14 tokens).

Layout (module names as timm's ``VisionTransformer``, so the same paths work on both): ``patch_embed.proj``
(a ``patch_size`` x ``patch_size`` stride-``patch_size`` convolution), a class token and learned position
embeddings, ``blocks.0`` .. ``blocks.{depth-1}`` (pre-norm: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``, with
stochastic depth), ``norm``, and ``head``, a linear classifier on the class token (no distillation token).

Attention runs through ``F.scaled_dot_product_attention`` (fused kernels where the device has them). When a
method asks for the attention map of a block (``automix.models.attention.AttentionTap``, the ``"attention"``
context), that block alone computes it explicitly, softmax in float32, and shows it to a hook, in the same
forward pass; the output is the same as the fused path's (to float rounding), and with no tap open nothing
changes.

Tokens: ``forward_features`` returns ``[B, 1 + h * w, dim]`` (class token first), and every block outputs
that shape, so a block is a feature layer for AutoMix / SAMix (``automix.models.features.tokens_to_map``
drops the class token and lays the rest on the ``h x w`` grid). The default feature layer is the middle block
(``blocks.5`` of 12), as the reference's DeiT-S configs (``out_indices=(5, 11)`` in
``configs/classification/cifar100/automix/vits/deit_s_l6_a2_near_L1_01_sz224_mlr1e_4_bs100_ep200.py`` of
``Westlake-AI/openmixup`` at commit ``37e1372``).

Initialisation as DeiT (timm's default): truncated Normal(0, 0.02) for linear layers, position embeddings and
the class token, zero biases, LayerNorm weight 1 and bias 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import check_input_channels, check_positive_int, register_model

__all__ = ["Attention", "Block", "PatchEmbed", "VisionTransformer", "vit_small", "vit_tiny"]


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``[B, C, H, W]`` -> ``[B, (H / p) * (W / p), dim]``.

    Raises:
        ValueError: ``img_size`` is not a multiple of ``patch_size`` (at construction), or an input's height or
            width is not, or its channels are not ``in_chans`` (in ``forward``, naming ``x`` and its shape).
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = check_positive_int("img_size", img_size)
        self.patch_size = check_positive_int("patch_size", patch_size)
        if img_size % patch_size:
            raise ValueError(f"img_size must be a multiple of patch_size, got img_size={img_size} and "
                             f"patch_size={patch_size}")
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        check_input_channels(x, self.in_chans, "VisionTransformer")
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"x must be [B, C, H, W] with H and W multiples of patch_size={p}, got shape "
                             f"{tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over ``[B, N, dim]`` tokens.

    ``keep_attention`` (False): compute the probabilities explicitly (float32 softmax) and pass them through
    ``probe`` (an identity module, the hook point of ``AttentionTap``) before weighting the values; off, the
    fused ``F.scaled_dot_product_attention`` runs and no probabilities exist. Both paths give the same output
    (dropout aside: ``attn_drop`` draws different masks on the two paths).
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim must be a multiple of num_heads, got embed_dim={dim}, num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.probe = nn.Identity()
        self.keep_attention = False

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        if self.keep_attention:
            probs = torch.matmul(q.float() * self.scale, k.float().transpose(-2, -1)).softmax(-1)
            probs = self.probe(probs)
            out = torch.matmul(F.dropout(probs, drop) if drop else probs, v.float()).to(v.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> dropout -> ``fc2`` -> dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (arXiv:1603.09382): in training, drop each sample's residual branch with probability
    ``p`` and scale the kept ones by ``1 / (1 - p)``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: ``x + drop_path(attn(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """A ViT / DeiT classifier (class-token head, no distillation token).

    Args:
        num_classes: logits.
        img_size: the image side the position embeddings are made for; other sides that are multiples of
            ``patch_size`` work too (the embeddings are resized bicubically to the new grid, as for DeiT's
            fine-tuning at 384 px).
        patch_size: patch side in pixels.
        in_chans: input channels.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the transformer's shape.
        drop_rate: dropout after the position embedding, in the blocks' projections and MLPs, and before the head.
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth, rising linearly from 0 at the first block to this at the last (0.1 in
            the reference's DeiT-S configs).

    Raises:
        ValueError: ``img_size`` is not a multiple of ``patch_size``, ``embed_dim`` not a multiple of
            ``num_heads``, or a rate outside [0, 1).
        TypeError: a size that is not an int.

    Attributes: ``num_features`` (``embed_dim``), ``num_prefix_tokens`` (1: the class token), ``patch_size``,
    ``img_size``, ``default_feature_layer`` (the middle block, ``blocks.{depth // 2 - 1}``).
    """

    num_prefix_tokens = 1

    def __init__(self, num_classes: int = 1000, *, img_size: int = 32, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        num_classes = check_positive_int("num_classes", num_classes)
        for name in ("in_chans", "embed_dim", "depth", "num_heads"):
            check_positive_int(name, locals()[name])
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            rate = locals()[name]
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1), got {rate!r}")
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_features = self.embed_dim = embed_dim
        self.default_feature_layer = f"blocks.{max(depth // 2 - 1, 0)}"
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=rate) for rate in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _pos_embed(self, grid: tuple[int, int]) -> Tensor:
        """The position embeddings for a ``grid`` of patches (resized bicubically when it is not the built one)."""
        built = self.patch_embed.grid_size
        if tuple(grid) == built:
            return self.pos_embed
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patches = patches.reshape(1, built[0], built[1], -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False)
        patches = patches.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
        return torch.cat([cls, patches], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised tokens ``[B, 1 + h * w, embed_dim]`` (class token first) of images ``x`` [B, C, H, W]."""
        tokens = self.patch_embed(x)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = self.pos_drop(tokens + self._pos_embed(grid).to(tokens.dtype))
        return self.norm(self.blocks(tokens))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits ``[B, num_classes]`` from the class token of ``forward_features``' output (``pre_logits``:
        the class token itself, ``[B, embed_dim]``)."""
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.forward_head(self.forward_features(x))


def _vit(num_classes: int, embed_dim: int, num_heads: int, img_size: int, patch_size: int, in_chans: int,
         depth: int, **kwargs: float) -> VisionTransformer:
    return VisionTransformer(num_classes, img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                             embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kwargs)


@register_model("vit_tiny", feature_layer="blocks.5")
def vit_tiny(num_classes: int = 10, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, depth: int = 12,
             drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> VisionTransformer:
    """DeiT-Ti shape (arXiv:2012.12877): dim 192, 3 heads, 12 blocks, MLP x4 (5.4M parameters at 32 px / patch
    4 with 10 classes; 5.7M at 224 / 16 with 1000). ``depth`` shortens it (the default feature layer stays the
    middle block: ``blocks.5`` at 12, ``blocks.{depth // 2 - 1}``; the registry's ``blocks.5`` is the 12-block
    one)."""
    return _vit(num_classes, 192, 3, img_size, patch_size, in_chans, depth, drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)


@register_model("vit_small", feature_layer="blocks.5")
def vit_small(num_classes: int = 10, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, depth: int = 12,
              drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> VisionTransformer:
    """DeiT-S shape (arXiv:2012.12877): dim 384, 6 heads, 12 blocks, MLP x4 (21.3M parameters at 32 px / patch 4
    with 10 classes; 22.05M at 224 / 16 with 1000). ``depth`` shortens it (the default feature layer stays the
    middle block: ``blocks.5`` at 12, ``blocks.{depth // 2 - 1}``; the registry's ``blocks.5`` is the 12-block
    one)."""
    return _vit(num_classes, 384, 6, img_size, patch_size, in_chans, depth, drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)
