"""gmm_jax: Gaussian mixture models fit by EM in JAX, with every derivation checked by automatic differentiation.

Layers (see docs/architecture.md): the math layer (pure, whole-array: :mod:`gmm_jax.em`, :mod:`gmm_jax.params`,
:mod:`gmm_jax.stats`), the one E-step (:mod:`gmm_jax.density`) and the fused pass with its fast forms
(:mod:`gmm_jax.engine`, :mod:`gmm_jax.forms`), the EM loop (:func:`fit`), clustering (:func:`kmeans`), the sharded
and streamed variants (:func:`fit_sharded`, :func:`fit_stream`), model functions (:mod:`gmm_jax.model`); tuning in
:class:`Config`.
"""

from gmm_jax.clustering import KMeansResult, kmeans, kmeans_predict
from gmm_jax.config import Config, default_config
from gmm_jax.em import (
    SuffStats,
    add_stats,
    e_step,
    elbo,
    em_step,
    log_gaussian,
    log_joint,
    log_likelihood,
    m_step,
    recenter_stats,
    score_samples,
    sufficient_stats,
)
from gmm_jax.initialization import initialize
from gmm_jax.loop import FitResult, fit, restart_keys
from gmm_jax.metrics import component_to_class, match_components, matched_accuracy
from gmm_jax.model import aic, bic, impute, predict, predict_log_proba, predict_proba, sample, sample_component, score
from gmm_jax.params import (
    COVARIANCE_TYPES,
    GMMParams,
    StudentTParams,
    UnconstrainedParams,
    cov_chol_from_prec_chol,
    covariances_from_prec_chol,
    from_covariances,
    from_unconstrained,
    n_parameters,
    prec_chol_from_covariances,
    prec_chol_from_precisions,
    precisions_from_prec_chol,
    to_unconstrained,
)
from gmm_jax.path import PathResult, fit_path
from gmm_jax.prior import Prior
from gmm_jax.seeding import kmeans_plusplus
from gmm_jax.sharded import ShardedRows, fit_sharded, kmeans_sharded, row_mesh, shard_process_rows, shard_rows
from gmm_jax.stream import OnlineResult, StreamResult, array_batches, fit_online, fit_stream
from gmm_jax.supervised import fit_supervised
from gmm_jax.variational import VBParams, VBPrior

__version__ = "0.1.0"


def __getattr__(name):
    """``GMMVAE`` is imported on first use: Flax costs most of a second at import, which the command line and
    the plain mixtures do not need."""
    if name == "GMMVAE":
        from gmm_jax.vae import GMMVAE

        return GMMVAE
    raise AttributeError(f"module 'gmm_jax' has no attribute {name!r}")


__all__ = [
    "COVARIANCE_TYPES",
    "Config",
    "FitResult",
    "GMMVAE",
    "GMMParams",
    "KMeansResult",
    "OnlineResult",
    "PathResult",
    "Prior",
    "VBParams",
    "VBPrior",
    "StreamResult",
    "StudentTParams",
    "SuffStats",
    "UnconstrainedParams",
    "ShardedRows",
    "add_stats",
    "array_batches",
    "aic",
    "bic",
    "cov_chol_from_prec_chol",
    "default_config",
    "covariances_from_prec_chol",
    "e_step",
    "elbo",
    "em_step",
    "fit",
    "fit_online",
    "fit_path",
    "fit_sharded",
    "fit_stream",
    "fit_supervised",
    "impute",
    "initialize",
    "from_covariances",
    "from_unconstrained",
    "kmeans",
    "kmeans_sharded",
    "component_to_class",
    "match_components",
    "matched_accuracy",
    "kmeans_plusplus",
    "kmeans_predict",
    "log_gaussian",
    "log_joint",
    "log_likelihood",
    "m_step",
    "n_parameters",
    "prec_chol_from_covariances",
    "prec_chol_from_precisions",
    "precisions_from_prec_chol",
    "predict",
    "predict_log_proba",
    "predict_proba",
    "recenter_stats",
    "restart_keys",
    "row_mesh",
    "sample",
    "sample_component",
    "score",
    "score_samples",
    "shard_process_rows",
    "shard_rows",
    "sufficient_stats",
    "to_unconstrained",
]
