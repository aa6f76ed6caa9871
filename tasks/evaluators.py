"""The one place the evaluator registry (train/evaluators.EVALUATORS) is filled: importing
this module registers every task package's evaluators. The command line imports it
before the config is checked, so `config.evals` may name any of them."""
# pylint: disable=unused-import
from tasks.classification import evaluators as classification_evaluators  # noqa: F401
from tasks.instance import evaluators as instance_evaluators  # noqa: F401
