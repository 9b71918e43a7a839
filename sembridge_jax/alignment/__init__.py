"""Semantic-aware Knowledge Alignment (SKA): CORAL, token attention and Sinkhorn OT."""

from sembridge_jax.alignment.attention import (
    CrossModalWeights,
    TokenAttention,
    adaptive_avg_pool_tokens,
    attention_alignment_loss,
    cross_modal_weights,
    energy_preserving_reweight,
    token_attention_weights,
    token_grid_side,
)
from sembridge_jax.alignment.coral import centred_covariance, coral
from sembridge_jax.alignment.head import (
    DEFAULT_CORAL_WEIGHT,
    DEFAULT_OT_WEIGHT,
    DEFAULT_SEMANTIC_WEIGHT,
    AlignmentHead,
    AlignmentTerms,
    FixedProjection,
    FrozenLinear,
)
from sembridge_jax.alignment.sinkhorn import (
    SinkhornAlignmentResult,
    label_mismatch,
    semantic_cost_matrix,
    sinkhorn_alignment,
)

__all__ = [
    "DEFAULT_CORAL_WEIGHT",
    "DEFAULT_OT_WEIGHT",
    "DEFAULT_SEMANTIC_WEIGHT",
    "AlignmentHead",
    "AlignmentTerms",
    "CrossModalWeights",
    "FixedProjection",
    "FrozenLinear",
    "SinkhornAlignmentResult",
    "TokenAttention",
    "adaptive_avg_pool_tokens",
    "attention_alignment_loss",
    "centred_covariance",
    "coral",
    "cross_modal_weights",
    "energy_preserving_reweight",
    "label_mismatch",
    "semantic_cost_matrix",
    "sinkhorn_alignment",
    "token_attention_weights",
    "token_grid_side",
]
