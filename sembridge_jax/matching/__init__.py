"""Student-Friendly Matching (METHOD section 2): who teaches whom.

* `nearest_teacher` -- initial matching by cosine similarity of matcher embeddings,
  optionally after `centre_per_class` (`nearest.py`).
* `rematch_by_kl`, `select_teacher_by_kl` -- re-matching by KL between teacher-gallery
  and student predictions, for a whole student set or one batch inside a jitted step
  (`kl_rematch.py`).
* Both are the same-class top-k of a factorised affinity, chunked and sharded
  (`selection.py`).
* `Matcher`, `ProjectionHead` (`matcher.py`) and `matcher_loss` (`contrastive.py`) --
  the self-supervised MS/RGB matcher.
* `match_report` -- statistics of a matching (`report.py`).
* `kd_target_spread` -- how much the choice of a same-class teacher can change a
  student's KD target (`target_spread.py`).
"""

from sembridge_jax.matching.contrastive import matcher_loss, soft_cross_entropy
from sembridge_jax.matching.kl_rematch import (Rematch, negative_kl_affinity, rematch_by_kl,
                                               rematch_by_kl_with_divergences,
                                               select_teacher_by_kl)
from sembridge_jax.matching.matcher import Matcher, ProjectionHead
from sembridge_jax.matching.nearest import (centre_per_class, cosine_affinity, l2_normalize,
                                            nearest_teacher, nearest_teacher_with_scores)
from sembridge_jax.matching.report import (Histogram, MatchReport, MatchReportFiles,
                                           format_match_report, match_report,
                                           write_match_report)
from sembridge_jax.matching.selection import (NO_TEACHER, Affinity, Selection,
                                              check_class_coverage, top_k_dense,
                                              top_k_within_class)
from sembridge_jax.matching.target_spread import (KDTargetSpread, format_kd_target_spread,
                                                   kd_target_spread)

__all__ = [
    "Affinity", "Histogram", "KDTargetSpread", "MatchReport", "MatchReportFiles", "Matcher",
    "NO_TEACHER", "ProjectionHead", "Rematch", "Selection", "centre_per_class",
    "check_class_coverage", "cosine_affinity", "format_kd_target_spread",
    "format_match_report", "kd_target_spread", "l2_normalize", "match_report",
    "matcher_loss", "nearest_teacher", "nearest_teacher_with_scores", "negative_kl_affinity",
    "rematch_by_kl", "rematch_by_kl_with_divergences", "select_teacher_by_kl",
    "soft_cross_entropy", "top_k_dense", "top_k_within_class", "write_match_report",
]
