"""AdamW with linear warmup then linear decay to zero: BERT's fine-tuning recipe.

>>> optimizer = adamw(total_steps=2000, learning_rate=1e-4, warmup_ratio=0.1,
...                   weight_decay=0.01, clip_norm=1.0)
"""

import keras

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


def adamw(
    total_steps: int,
    learning_rate: float,
    warmup_ratio: float,
    weight_decay: float,
    clip_norm: float,
) -> keras.optimizers.AdamW:
    schedule = WarmupLinearDecay(learning_rate, total_steps, round(warmup_ratio * total_steps))
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        epsilon=1e-6,
        global_clipnorm=clip_norm or None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
