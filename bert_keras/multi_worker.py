"""Keras 3 `model.fit` under `tf.distribute.MultiWorkerMirroredStrategy`: two upstream bugs,
worked around until Keras fixes them (keras-team/keras#20585, #20329; tensorflow/tensorflow#72388).

Out of the box, fit fails on every model, even one Dense layer, in two places:
1. `TensorFlowTrainer._maybe_symbolic_build` asks the strategy to average a whole distributed
   input batch (a dict of PerReplica values) only to learn its shapes; the multi-worker strategy
   reduces one tensor at a time: "Attempt to convert a value ({... PerReplica ...}) with an
   unsupported type (dict)". Here it gets the first local replica's batch: same shapes.
2. `reduce_per_replica` averages each step's metrics with `axis=0` under multi-worker collectives;
   the metrics are scalars: "Invalid reduction dimension 0 for input with 0 dimensions". Here
   scalars are averaged over replicas with `axis=None`.

Both changes only take effect under a multi-worker strategy. `tests/test_multi_worker.py::
test_keras_still_needs_the_workaround` trains without them and fails once Keras no longer breaks:
then delete this module and its one call in `distribute.make_strategy`.
"""

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

# Checked broken on Keras 3.0-3.15.1 (the issues above are open). A new major version gets no
# patch: its trainer may differ, and the test above tells whether it is still needed.
NEEDED = keras.__version__.startswith("3.")

_applied = False


def apply():
    """Patches Keras' TensorFlow trainer in place (idempotent)."""
    global _applied
    if _applied or not NEEDED:
        return
    _applied = True
    build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    reduce = tf_trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and _multi_worker(self.distribute_strategy):
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(_first_local, next(it))
                break
            iterator = None
        return build(self, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if _first_local(v).shape.rank == 0
                    else reduce(v, strategy, reduction)
                ),
                values,
            )
        return reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica


def _multi_worker(strategy) -> bool:
    return tf_trainer._collective_all_reduce_multi_worker(strategy)


def _first_local(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value
