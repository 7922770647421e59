"""AdamW with linear warmup then linear decay to zero: BERT's fine-tuning recipe.

>>> optimizer = adamw(total_steps=2000, learning_rate=1e-4, warmup_ratio=0.1,
...                   weight_decay=0.01, clip_norm=1.0)
"""

import keras
import tensorflow as tf

# Substrings of variable names that get no weight decay: biases and LayerNorm's scale and
# offset (keras names them gamma and beta), as in the original BERT optimizer.
NO_DECAY = ["bias", "gamma", "beta"]


@keras.saving.register_keras_serializable("bert_keras")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        factor = keras.ops.where(step < self.warmup_steps, warmup, decay)
        return self.peak * keras.ops.clip(factor, 0.0, 1.0)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


class AdamW(keras.optimizers.AdamW):
    """AdamW that clips the global gradient norm after the cross-replica sum.

    Keras 3 clips (`global_clipnorm`) inside each replica, before the all-reduce, so under
    MirroredStrategy every replica's partial gradient is clipped on its own and training no
    longer matches one device (measured: losses apart by 0.4% within one epoch on the tiny test
    BERT; identical without clipping). Here the all-reduce comes first, then the clip, as on one
    device. TensorFlow backend only (`_all_reduce_sum_gradients` is its hook).
    """

    def __init__(self, clip_norm: float, **kwargs):
        super().__init__(**kwargs)
        self.clip_norm = clip_norm

    def _clip_gradients(self, grads):
        return grads  # clipped after the all-reduce, below

    def _all_reduce_sum_gradients(self, grads_and_vars):
        grads_and_vars = super()._all_reduce_sum_gradients(grads_and_vars)
        if not self.clip_norm:
            return grads_and_vars
        grads, variables = zip(*grads_and_vars, strict=True)
        clipped, _ = tf.clip_by_global_norm(list(grads), self.clip_norm)
        return list(zip(clipped, variables, strict=True))


def adamw(
    total_steps: int,
    learning_rate: float,
    warmup_ratio: float,
    weight_decay: float,
    clip_norm: float,
) -> AdamW:
    schedule = WarmupLinearDecay(learning_rate, total_steps, round(warmup_ratio * total_steps))
    optimizer = AdamW(
        clip_norm=clip_norm,
        learning_rate=schedule,
        weight_decay=weight_decay,
        epsilon=1e-6,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
