"""Research on top of the library: diagnostics, figures and analyses of a pipeline workdir.

Nothing in the training stages imports this package. They reach it through one door,
the reports named in ``config.reports`` (`sembridge_jax.stages.reports`):

* `synthetic_ground_truth`: SFM's pairs against the synthetic generator's scene
  descriptors, and where every run's errors fall among the confusable class pairs;
* `kd_target_spread`: how much a same-class teacher's choice can change a KD target;
* `distillation_figures`: the transport plan, dual potentials, Sinkhorn convergence and
  matched pairs of a finished SemBridge run.

The notebook and ``bench/`` use the rest directly: `workdir.AnalysisWorkdir` (students,
pairs and features of a finished workdir), `transport_cost` (the paper's transport-cost
argument, measured) and `example_workdir` (a small pipeline run to explore).
"""
