"""SAM's prompt decoder for many prompt sets against one image, with shared image work.

``MaskDecoder`` repeats the image embedding once per prompt set and runs every linear map of
the two-way transformer on all h*w image tokens of every copy: about 3.5 GFLOPs per object, 90%
of it in 256x128 projections of 4096 tokens. :class:`BatchedMaskDecoder` computes the same
function from the same weights with far less work, by three exact identities:

1. **The first block's image-side projections are shared.** Before the first block the image
   tokens of object b are ``x + dense_b``, and the dense (mask) embedding ends with a 1x1
   convolution: ``dense_b = A h_b + c`` with ``h_b`` only 16 channels wide (or ``c`` alone
   when there is no mask prompt). So every projection ``W (x + dense_b)`` is one shared
   ``W (x + c)`` for the frame plus a rank-16 ``(W A) h_b`` per object.
2. **Attention over a few prompt tokens is low-rank.** T ~ 7-12 tokens and 8 heads make every
   token<->image attention a product through an (H*T)-wide bottleneck, so the 128-wide query,
   key, value and output projections of image tokens are folded onto the token side:
   ``softmax(q (W_k k)^T) (W_v k)`` = ``softmax((q W_k) k^T) k W_v^T`` (rows of the softmax sum
   to 1, and a key bias adds a constant per row, which softmax ignores).
3. **The upscaling is pixel-local.** Both 2x2 stride-2 transposed convolutions, the
   LayerNorm2d and GELU act on each pixel alone, so they run as plain matrix products on the
   token-major image tokens (no NCHW copy) and the pixel shuffle happens once, on the chosen
   masks only.

Per object this is ~1.8 GFLOPs (~0.9 GFLOP is the upscaling) plus ~0.8 GFLOP shared per
frame. Results equal ``MaskDecoder`` up to float32 rounding (the tests hold it to 1e-5 relative
L2 and to the conformance vectors); checkpoints are untouched: the module owns no weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from repvit_sam.modeling.mask_decoder import MaskDecoder
from repvit_sam.modeling.prompt_encoder import PromptEncoder
from repvit_sam.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

# Tokens per slice of the upscaling: 512 x 16 x 32 floats (1 MiB) of upsampled activations.
_UPSCALE_CHUNK = 512


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, C / H)."""
    b, t, c = x.shape
    return x.reshape(b, t, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H * d)."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def _weight_heads(linear: nn.Linear, num_heads: int) -> torch.Tensor:
    """A (H*d, C) projection's weight as (H, d, C): row block h serves head h."""
    out_dim, in_dim = linear.weight.shape
    return linear.weight.reshape(num_heads, out_dim // num_heads, in_dim)


def _softmax_per_head(scores: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Softmax over the T tokens of each head in (B, N, H*T) scores, in place.

    Written out because ``torch.softmax`` over a last dimension of ~9 runs ~7x slower here
    (2.7 ms against 0.4 ms for 4096 x 8 x 9 on 2 cores).
    """
    b, n, ht = scores.shape
    x = scores.view(b, n, num_heads, ht // num_heads)
    x.sub_(x.amax(dim=-1, keepdim=True)).exp_()
    x.div_(x.sum(dim=-1, keepdim=True))
    return scores


def _block_diagonal(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, H*T, H*d): head h's (T, d) block at (h, h), zeros elsewhere.

    Multiplying a shared (H*d)-wide projection by this does every head's product in one GEMM:
    H times the necessary multiply-adds, but a single well-shaped call instead of B*H tiny ones.
    """
    b, h, t, d = x.shape
    eye = torch.eye(h, dtype=x.dtype, device=x.device)
    return (x[:, :, :, None, :] * eye[None, :, None, :, None]).reshape(b, h * t, h * d)


@dataclass(frozen=True)
class _SharedImage:
    """One frame's image tokens and the projections every object's first block shares.

    Attributes:
        image: (n, C) image tokens plus the dense embedding's constant.
        pe: (n, C) positional encoding.
        keys: (n, H*d) token->image keys of ``image + pe``.
        values: (n, H*d) token->image values of ``image``.
        queries: (n, H*d) image->token queries of ``image + pe``.
    """

    image: torch.Tensor
    pe: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor


class BatchedMaskDecoder(nn.Module):
    """``PromptEncoder`` dense path + ``MaskDecoder`` for B prompt sets on one image.

    Args:
        prompt_encoder: the model's prompt encoder (its mask-downscaling path is split before
            its last 1x1 convolution, identity 1 above).
        mask_decoder: the model's mask decoder with its two-way transformer.
        chunk_size: objects decoded together; more objects run chunk after chunk (bounded
            memory), sharing the frame's image-side work. Default 4 in float32 and 16 in
            bf16, whose GEMMs gain more from tall operands (per extra object, 2 cores with
            AMX: 10.6 ms in chunks of 4, 8.7 ms in chunks of 16; 58 MB more peak memory).
        bf16: run the transformer and the upscaling in bfloat16 (autocast on the
            embedding's device), keeping float32 for the mask prompt's downscaling (faster in
            float32) and for the parts whose rounding matters: the final product of the
            upscaled features with the hypernetwork weights (the logits, thresholded at 0 and
            fed back as the next frame's mask prompt) and the IoU head. Off (default): float32 throughout, bit for bit unchanged.

    The bf16 split, measured (1 thread, process CPU time, 8 objects against 1, Intel Xeon with
    AMX): per extra object float32 43 ms, bf16 transformer only 35 ms (0.81x), bf16
    transformer and upscaling 29 ms (0.67x). Worst mask agreement with float32 over the golden
    cases (plain model): 99.49% (transformer only), 99.44% (with the upscaling); the logits
    and IoU head in bf16 too: 99.43%, IoU error 0.0121 against 0.0114, for no measurable gain
    (a few MFLOPs), so they stay float32.

    bf16 also changes the layout where float32's is slow in bf16 (same function, the float32
    path untouched): image -> token scores are (B, H*T, n), so each head's softmax runs along
    the image axis; ``keys + pe`` is never written (pe's share of a product is one GEMM for
    all objects); scales and output biases go onto the small operands; the upscaling runs a
    whole object per GEMM; chunks hold 16 objects. Per extra object, 2 cores, float32 and
    bf16 interleaved in one run, 3 candidates: 17.7 against 8.1 ms (0.46x; 0.82x before).

    Example:
        >>> decoder = BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder)
        >>> sparse, _ = sam.prompt_encoder(points=None, boxes=boxes_1024, masks=None)
        >>> low_res, iou = decoder(features, sam.prompt_encoder.get_dense_pe(), sparse,
        ...                        mask_logits, multimask_output=True)
    """

    def __init__(
        self,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        *,
        chunk_size: int | None = None,
        bf16: bool = False,
    ) -> None:
        super().__init__()
        if chunk_size is None:
            chunk_size = 16 if bf16 else 4
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.bf16 = bf16
        transformer = mask_decoder.transformer
        if not isinstance(transformer, TwoWayTransformer) or not transformer.layers:
            raise TypeError("BatchedMaskDecoder needs SAM's TwoWayTransformer")
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.transformer = transformer
        self.num_heads = transformer.num_heads

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        mask_logits: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompt sets.

        Args:
            image_embeddings: (1, C, h, w) float32 embedding of the image.
            image_pe: (1, C, h, w) positional encoding of that grid.
            sparse_prompt_embeddings: (B, S, C) point and box embeddings from the prompt
                encoder.
            mask_logits: (B, 1, 4h, 4w) float32 low-res mask prompts, or None.
            multimask_output: the 3 ambiguity-aware masks instead of the single one.

        Returns:
            (B, M, 4h, 4w) low-res mask logits and (B, M) predicted IoU, M = 3 or 1, as
            ``MaskDecoder.forward`` on the same inputs.
        """
        if image_embeddings.shape[0] != 1:
            raise ValueError(
                f"image_embeddings: expected one image (1, C, h, w), got "
                f"{tuple(image_embeddings.shape)}"
            )
        _, c, h, w = image_embeddings.shape
        image = image_embeddings.reshape(c, h * w).t().contiguous()
        pe = image_pe.reshape(c, h * w).t().contiguous()
        batch = sparse_prompt_embeddings.shape[0]
        if mask_logits is not None and mask_logits.shape[0] != batch:
            raise ValueError(
                f"mask_logits: expected ({batch}, 1, {4 * h}, {4 * w}), got "
                f"{tuple(mask_logits.shape)}"
            )
        with self._autocast(image.device):
            shared = self._shared(image, pe, mask_logits is not None)
        # Objects run in chunks: each object's image tokens are (h*w, C) floats (4 MiB on
        # SAM's grid), so a chunk's activations stay bounded whatever the number of objects;
        # the per-frame image-side work above is done once for all chunks.
        if batch <= self.chunk_size:
            return self._decode_chunk(shared, sparse_prompt_embeddings, mask_logits,
                                      multimask_output, (h, w))
        # Chunks write into one output: a final torch.cat would hold every mask twice
        # (200 MB for 254 objects).
        m = self.mask_decoder.num_mask_tokens - 1 if multimask_output else 1
        masks = image.new_empty((batch, m, 4 * h, 4 * w), dtype=torch.float32)
        ious = image.new_empty((batch, m), dtype=torch.float32)
        for start in range(0, batch, self.chunk_size):
            stop = min(batch, start + self.chunk_size)
            masks[start:stop], ious[start:stop] = self._decode_chunk(
                shared, sparse_prompt_embeddings[start:stop],
                None if mask_logits is None else mask_logits[start:stop],
                multimask_output, (h, w))
        return masks, ious

    def _decode_chunk(
        self,
        shared: _SharedImage,
        sparse: torch.Tensor,
        mask_logits: torch.Tensor | None,
        multimask_output: bool,
        grid_hw: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        md = self.mask_decoder
        with self._autocast(sparse.device):
            tokens = self._tokens(sparse)
            low_rank = self._dense(mask_logits, tokens.shape[0], grid_hw)
            layers = list(self.transformer.layers)
            queries, keys = self._first_block(layers[0], tokens, shared, low_rank)
            for layer in layers[1:]:
                queries, keys = self._block(layer, queries, keys, tokens, shared.pe)
            final = self.transformer.final_attn_token_to_image
            attn = self._token_to_image(final, queries + tokens, keys, shared.pe,
                                        None if self.bf16 else keys + shared.pe)
            queries = self.transformer.norm_final_attn(queries + attn)
            chosen = range(1, md.num_mask_tokens) if multimask_output else range(1)
            hyper_in = torch.stack(
                [md.output_hypernetworks_mlps[i](queries[:, 1 + i]) for i in chosen], dim=1
            )
            masks = self._upscale_and_project(keys, hyper_in, grid_hw)
        # float32 from here in bf16 mode too: the IoU head's 3 layers cost nothing, and its
        # scores gate which candidate the tracker keeps.
        iou = md.iou_prediction_head(queries[:, 0].float())
        return masks, iou[:, 1:] if multimask_output else iou[:, :1]

    @contextlib.contextmanager
    def _autocast(self, device: torch.device) -> Iterator[None]:
        """bf16 autocast on ``device`` when ``bf16`` is on; otherwise nothing changes."""
        if not self.bf16:
            yield
            return
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield

    def _shared(self, image: torch.Tensor, pe: torch.Tensor, has_masks: bool) -> _SharedImage:
        """The first block's image-side projections, the same for every object (identity 1)."""
        pe_module = self.prompt_encoder
        if has_masks:
            last = list(pe_module.mask_downscaling)[-1]
            if not isinstance(last, nn.Conv2d) or last.kernel_size != (1, 1):
                raise TypeError("the mask-downscaling path must end with a 1x1 convolution")
            weight = last.weight.reshape(last.out_channels, last.in_channels)
            offset = last.bias if last.bias is not None else torch.zeros_like(weight[:, 0])
        else:
            offset = pe_module.no_mask_embed.weight[0]
        layer = self.transformer.layers[0]
        shared = image + offset  # (n, C): every object's image tokens minus the rank-r part
        if self.bf16:
            # Every per-object (n, C) tensor derives from these two: in bf16 from the start,
            # no float32 operand promotes it back (measured: the later blocks were slower in
            # bf16 than in float32 while ``keys + pe`` came out float32).
            shared, pe = shared.to(torch.bfloat16), pe.to(torch.bfloat16)
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        return _SharedImage(
            image=shared,
            pe=pe,
            keys=t2i.k_proj(shared + pe),  # (n, H*d)
            values=t2i.v_proj(shared),
            queries=i2t.q_proj(shared + pe),
        )

    # ------------------------------------------------------------------ inputs

    def _tokens(self, sparse: torch.Tensor) -> torch.Tensor:
        md = self.mask_decoder
        output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)
        tokens = torch.cat([output_tokens, sparse], dim=1)
        return tokens.to(torch.bfloat16) if self.bf16 else tokens

    def _dense(
        self, mask_logits: torch.Tensor | None, batch: int, grid_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The dense embedding minus its constant: (h_b (B, h*w, r), A (C, r)), or None."""
        if mask_logits is None:
            return None
        if mask_logits.shape[0] != batch or mask_logits.shape[-2:] != (
            4 * grid_hw[0],
            4 * grid_hw[1],
        ):
            raise ValueError(
                f"mask_logits: expected ({batch}, 1, {4 * grid_hw[0]}, {4 * grid_hw[1]}), got "
                f"{tuple(mask_logits.shape)}"
            )
        *body, last = list(self.prompt_encoder.mask_downscaling)
        hidden = mask_logits
        # float32 in bf16 mode too: with 1 to 16 channels these layers are elementwise work,
        # faster in float32 on a CPU (0.33 against 0.46 ms per object, 16 objects, 2 cores).
        with torch.autocast(mask_logits.device.type, enabled=False):
            for layer in body:
                hidden = layer(hidden)
        low_rank = hidden.flatten(2).transpose(1, 2)
        return low_rank, last.weight.reshape(last.out_channels, last.in_channels)

    # ------------------------------------------------------------------ transformer

    def _first_block(
        self,
        layer: TwoWayAttentionBlock,
        tokens: torch.Tensor,
        shared_image: _SharedImage,
        low_rank: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block 1, with every image-side projection shared across objects (identity 1)."""
        heads = self.num_heads
        queries = layer.token_self_attention(tokens, tokens)
        shared = shared_image.image
        hidden_t = dense_w = None
        if low_rank is not None:
            hidden, dense_w = low_rank  # (B, n, r), (C, r)
            hidden_t = hidden.transpose(1, 2).contiguous()  # (B, r, n)

        # Token -> image attention against shared keys and values (+ rank r).
        attn = layer.cross_attn_token_to_image
        q = _heads(attn.q_proj(queries + tokens), heads)  # (B, H, T, d)
        if hidden_t is not None and dense_w is not None:
            # bf16 mode: the in-place products below need one dtype (no-ops in float32).
            hidden_t, dense_w = hidden_t.to(q.dtype), dense_w.to(q.dtype)
        b, _, t, d = q.shape
        scores = _block_diagonal(q) @ shared_image.keys.t()  # (B, H*T, n)
        if hidden_t is not None:
            k_low = _weight_heads(attn.k_proj, heads) @ dense_w  # (H, d, r)
            scores.baddbmm_((q @ k_low).flatten(1, 2), hidden_t)
        probs = torch.softmax(scores.mul_(1.0 / math.sqrt(d)), dim=-1)
        # Every head's probabilities times all values; head h keeps its own d columns.
        mixed = (probs @ shared_image.values).view(b, heads, t, heads, d)
        out = torch.diagonal(mixed, dim1=1, dim2=3).permute(0, 3, 1, 2)  # (B, H, T, d)
        if hidden_t is not None:
            v_low = _weight_heads(attn.v_proj, heads) @ dense_w  # (H, d, r)
            low = (probs @ hidden_t.transpose(1, 2)).view(b, heads, t, -1)  # (B, H, T, r)
            out = out + low @ v_low.transpose(1, 2)
        queries = layer.norm2(queries + attn.out_proj(_merge_heads(out)))
        queries = layer.norm3(queries + layer.mlp(queries))

        # Image -> token attention: the image queries are shared (+ rank r).
        attn = layer.cross_attn_image_to_token
        k_tok = _heads(attn.k_proj(queries + tokens), heads)  # (B, H, T, d)
        v_tok = _heads(attn.v_proj(queries), heads)
        coupling = None
        if hidden_t is not None:
            q_low = _weight_heads(attn.q_proj, heads) @ dense_w  # (H, d, r)
            # (B, H, r, T) -> (B, r, H*T): the rank-r image queries meet every head's keys.
            coupling = (q_low.transpose(1, 2) @ k_tok.transpose(-2, -1)).permute(0, 2, 1, 3)
            coupling = coupling.reshape(b, -1, heads * t)
        if self.bf16:
            scale = 1.0 / math.sqrt(d)
            scores = (_block_diagonal(k_tok) * scale) @ shared_image.queries.t()  # (B, H*T, n)
            extra = None
            if hidden_t is not None and coupling is not None and dense_w is not None:
                scores.baddbmm_(coupling.transpose(1, 2) * scale, hidden_t)
                extra = (hidden_t, dense_w.t())
            keys = self._image_to_token_bf16(attn, scores, v_tok, shared, extra)
            return queries, layer.norm4(keys)
        scores = shared_image.queries @ _block_diagonal(k_tok).transpose(1, 2)  # (B, n, H*T)
        if hidden_t is not None and coupling is not None:
            scores.baddbmm_(hidden_t.transpose(1, 2), coupling)
        probs = _softmax_per_head(scores.mul_(1.0 / math.sqrt(d)), heads)
        keys = torch.baddbmm(shared + attn.out_proj.bias, probs, self._folded_values(attn, v_tok))
        if hidden_t is not None:
            keys.baddbmm_(hidden_t.transpose(1, 2), dense_w.t().expand(b, -1, -1))
        return queries, layer.norm4(keys)

    def _block(
        self,
        layer: TwoWayAttentionBlock,
        queries: torch.Tensor,
        keys: torch.Tensor,
        tokens: torch.Tensor,
        pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A later block: per-object image tokens, projections folded onto the tokens."""
        queries = layer.token_self_attention(queries, tokens)
        # bf16 never forms keys + pe: pe's share of each product is one GEMM for all objects.
        keys_pe = None if self.bf16 else keys + pe
        attn = self._token_to_image(
            layer.cross_attn_token_to_image, queries + tokens, keys, pe, keys_pe
        )
        queries = layer.norm2(queries + attn)
        queries = layer.norm3(queries + layer.mlp(queries))

        attn_mod = layer.cross_attn_image_to_token
        heads = self.num_heads
        k_tok = _heads(attn_mod.k_proj(queries + tokens), heads)  # (B, H, T, d)
        v_tok = _heads(attn_mod.v_proj(queries), heads)
        w_q = _weight_heads(attn_mod.q_proj, heads)  # (H, d, C)
        # scores[b, n, (h, t)] = (keys_pe[b, n] W_q,h^T + b_q,h) . k[b, h, t]
        folded = (k_tok @ w_q).flatten(1, 2)  # (B, H*T, C)
        bias = (k_tok @ attn_mod.q_proj.bias.reshape(heads, -1, 1)).flatten(1)  # (B, H*T)
        if keys_pe is None:  # bf16 (no keys + pe): (B, H*T, n) scores, keys updated in place
            scale = 1.0 / math.sqrt(k_tok.shape[-1])
            scores = self._image_scores(folded * scale, keys, pe, None)
            scores.add_(bias[:, :, None] * scale)
            return queries, layer.norm4(self._image_to_token_bf16(attn_mod, scores, v_tok, keys))
        scores = torch.baddbmm(bias[:, None], keys_pe, folded.transpose(1, 2))
        probs = _softmax_per_head(scores.mul_(1.0 / math.sqrt(k_tok.shape[-1])), heads)
        update = torch.baddbmm(
            keys + attn_mod.out_proj.bias.to(keys.dtype), probs,
            self._folded_values(attn_mod, v_tok)
        )
        return queries, layer.norm4(update)

    def _token_to_image(
        self,
        attn: Attention,
        q_in: torch.Tensor,
        keys: torch.Tensor,
        pe: torch.Tensor,
        keys_pe: torch.Tensor | None,
    ) -> torch.Tensor:
        """Tokens attend to per-object image tokens (identity 2); (B, T, C) output.

        ``keys_pe`` is ``keys + pe`` (float32), or None to take the keys and ``pe`` apart.
        """
        heads = self.num_heads
        q = _heads(attn.q_proj(q_in), heads)  # (B, H, T, d)
        b, _, t, d = q.shape
        if self.bf16:  # the scale on the small operand: one pass less over the scores
            q = q * (1.0 / math.sqrt(d))
        folded = (q @ _weight_heads(attn.k_proj, heads)).reshape(b, heads * t, -1)  # (B, H*T, C)
        # The key bias adds q . b_k to a whole row of scores: softmax ignores it.
        scores = self._image_scores(folded, keys, pe, keys_pe)
        probs = torch.softmax(scores if self.bf16 else scores.mul_(1.0 / math.sqrt(d)), dim=-1)
        mixed = (probs @ keys).reshape(b, heads, t, -1)  # (B, H, T, C); rows of probs sum to 1
        w_v = _weight_heads(attn.v_proj, heads)  # (H, d, C)
        out = mixed @ w_v.transpose(1, 2) + attn.v_proj.bias.reshape(heads, 1, d)
        return attn.out_proj(_merge_heads(out))

    @staticmethod
    def _image_scores(
        folded: torch.Tensor, keys: torch.Tensor, pe: torch.Tensor, keys_pe: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, R, C) folded queries against image tokens plus positional encoding: (B, R, n).

        With ``keys_pe`` (float32) one product; without (bf16) ``pe``'s share is one (B*R, C)
        by (C, n) GEMM for all objects and the keys' share is added by ``baddbmm_``, so the
        (B, n, C) sum ``keys + pe`` is never written (0.5 ms per object per use, 2 cores).
        """
        if keys_pe is not None:
            return folded @ keys_pe.transpose(1, 2)
        b, r, c = folded.shape
        scores = (folded.reshape(b * r, c) @ pe.t()).view(b, r, -1)
        return scores.baddbmm_(folded, keys.transpose(1, 2))

    def _image_to_token_bf16(
        self,
        attn: Attention,
        scores: torch.Tensor,
        v_tok: torch.Tensor,
        residual: torch.Tensor,
        extra: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """bf16 image -> token attention from scaled scores, plus the residual.

        Args:
            attn: the block's image -> token attention.
            scores: (B, H*T, n) scaled scores, laid out head by head.
            v_tok: (B, H, T, d) token values.
            residual: (n, C) image tokens shared by all objects, or (B, n, C) per-object image
                tokens, which are updated in place.
            extra: optional ((B, r, n) x, (r, C) w): adds x^T w in the same product (the first
                block's rank-r mask part: one pass over the output instead of two).

        Returns:
            (B, n, C) image tokens after the attention.

        The float32 path lays its scores out (B, n, H*T) and normalises each run of T ~ 9
        numbers; in bf16 that per-head softmax over a short last axis is slow (3.6 ms against
        0.33 ms for this layout's ``softmax(dim=2)``, 4 objects, 2 cores). The output bias goes
        onto the folded values: each head's probabilities sum to 1, so every row of
        probabilities sums to H and adds bias / H H times.
        """
        heads = self.num_heads
        b, ht, n = scores.shape
        probs = torch.softmax(scores.view(b, heads, ht // heads, n), dim=2).view(b, ht, n)
        values = self._folded_values(attn, v_tok) + attn.out_proj.bias / heads  # (B, H*T, C)
        values = values.to(residual.dtype)
        if extra is not None:
            x, w = extra
            probs = torch.cat([probs, x.to(probs.dtype)], dim=1)
            values = torch.cat([values, w.to(values.dtype).expand(b, -1, -1)], dim=1)
        if residual.dim() == 2:
            return torch.baddbmm(residual, probs.transpose(1, 2), values)
        return residual.baddbmm_(probs.transpose(1, 2), values)

    def _folded_values(self, attn: Attention, v_tok: torch.Tensor) -> torch.Tensor:
        """(B, H*T, C): each head's token values pushed through its slice of ``out_proj``."""
        heads = self.num_heads
        w_o = attn.out_proj.weight  # (C, H*d)
        w_o = w_o.reshape(w_o.shape[0], heads, -1).permute(1, 2, 0)  # (H, d, C)
        return (v_tok @ w_o).flatten(1, 2)

    # ------------------------------------------------------------------ masks

    def _upscale_and_project(
        self, keys: torch.Tensor, hyper_in: torch.Tensor, grid_hw: tuple[int, int]
    ) -> torch.Tensor:
        """(B, n, C) image tokens and (B, M, C/8) hypernetwork weights -> (B, M, 4h, 4w).

        Runs per object in slices of ``_UPSCALE_CHUNK`` tokens, so the 16x-upsampled
        activations stay in cache: 44 ms against 55 ms for 8 objects in one piece (2 cores).
        """
        up = self.mask_decoder.output_upscaling
        conv1, norm, act1, conv2, act2 = up[0], up[1], up[2], up[3], up[4]
        b, n, c = keys.shape
        # bf16 mode casts the weights once here, outside autocast: autocast would cast them
        # again for every slice, which made the bf16 upscaling slower than float32's (1.2
        # against 1.5 ms a slice, 0.44 ms cast once; 2 cores with AMX). No-ops in float32.
        dtype = torch.bfloat16 if self.bf16 else keys.dtype
        # A 2x2 stride-2 transposed convolution is a per-pixel linear map to 4 sub-pixels.
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, -1).to(dtype)  # (C, 4*C1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(conv2.in_channels, -1).to(dtype)
        bias1, bias2 = conv1.bias.repeat(4).to(dtype), conv2.bias.repeat(4).to(dtype)
        norm_w, norm_b = norm.weight.to(dtype), norm.bias.to(dtype)
        keys = keys.to(dtype)
        width1, width2 = conv1.out_channels, conv2.out_channels
        m = hyper_in.shape[1]
        # The logits are float32 in every mode (a no-op cast in float32 mode): in bf16 their
        # rounding would move the 0 threshold and the next frame's mask prompt.
        masks = keys.new_empty(b, n * 16, m, dtype=torch.float32)
        with torch.autocast(keys.device.type, enabled=False):
            # bf16 runs a whole object per slice: AMX's GEMMs want tall operands (3.1 ms per
            # object against 5.1 ms in 512-token slices, 2 cores).
            step = n if self.bf16 else _UPSCALE_CHUNK
            for obj_idx in range(b):
                weights = hyper_in[obj_idx].t().float()  # (C2, M)
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    x = torch.addmm(bias1, keys[obj_idx, start:stop], w1).view(-1, width1)
                    x = act1(F.layer_norm(x, (width1,), norm_w, norm_b, norm.eps))
                    x = act2(torch.addmm(bias2, x, w2)).view(-1, width2)
                    torch.mm(x.float(), weights, out=masks[obj_idx, start * 16 : stop * 16])
        h, w = grid_hw
        # Sub-pixel order is (i, j, a1, b1, a2, b2): row 4i + 2a1 + a2, column 4j + 2b1 + b2.
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, m, 4 * h, 4 * w)
