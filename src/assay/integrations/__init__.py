"""Bridges to other tools (optional extras): MLflow's model-evaluator plugin and its model registry.

* :mod:`assay.integrations.mlflow_evaluator` -- ``AssayEvaluator``, registered under MLflow's
  ``mlflow.model_evaluator`` entry point as ``"assay"``: ``mlflow.models.evaluate(..., evaluators=["assay"])``
  runs Assay's evaluation and logs its metrics (with CI bounds) and the evidence bundle to the run.
* :mod:`assay.integrations.mlflow_registry` -- ``export_to_mlflow`` / ``import_from_mlflow``: versions (model
  files, evidence bundles, sha256 tags) and aliases between Assay's registry and MLflow's.

Nothing else in Assay imports this package. MLflow is imported only when these are used; without it they raise
a :class:`~assay.errors.UserError` whose fix is ``pip install 'assay[mlflow]'``.
"""
