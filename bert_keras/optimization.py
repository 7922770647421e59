"""AdamW with linear warmup then linear decay to zero: BERT's fine-tuning recipe.

>>> optimizer = adamw(total_steps=2000, learning_rate=1e-4, warmup_ratio=0.1,
...                   weight_decay=0.01, clip_norm=1.0)
"""

import keras
import tensorflow as tf

# Substrings of variable names that get no weight decay: biases and LayerNorm's scale and
# offset (keras names them gamma and beta), as in the original BERT optimizer.
NO_DECAY = ["bias", "gamma", "beta"]
# The moving average of the weights (--ema_momentum) is updated every this many steps, with the
# momentum of that many steps: the same window, for a quarter of the reads and writes of every
# weight that each update costs (docs/search.md).
EMA_EVERY = 4


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
    """AdamW that clips the global gradient norm after the cross-replica sum, and updates each
    float32 variable with one fused kernel.

    Keras 3 clips (`global_clipnorm`) inside each replica, before the all-reduce, so under
    MirroredStrategy every replica's partial gradient is clipped on its own and training no
    longer matches one device. Here the all-reduce comes first, then the clip, as on one
    device. TensorFlow backend only (`_all_reduce_sum_gradients` is its hook).
    """

    def __init__(self, clip_norm: float, layer_scale=None, **kwargs):
        super().__init__(**kwargs)
        self.clip_norm = clip_norm
        self.layer_scale = layer_scale  # variable path -> its learning-rate factor, or None
        self._lr_scales = None

    def build(self, var_list):
        super().build(var_list)
        if self.layer_scale:
            self._lr_scales = [self.layer_scale(v.path) for v in var_list]

    def finalize_variable_values(self, var_list):
        """Keras writes the moving average over the weights at the end of every `fit` call: a
        resumed run (several calls) would then train on from the average. The average is
        swapped in for validation instead (`callbacks.EmaWeights`), so the best checkpoint and
        the export hold it."""

    def update_step(self, gradient, variable, learning_rate):
        """Keras' Adam update (the same formula: lr * sqrt(1 - b2^t) / (1 - b1^t) * m /
        (sqrt(v) + eps)) in TensorFlow's fused `ApplyAdam` kernel: one pass over the variable,
        its moments and gradient instead of a dozen element-wise ops, each over every parameter
        (docs/performance.md). Keras' weight decay is applied before, unchanged."""
        if self._lr_scales is not None:
            learning_rate = learning_rate * self._lr_scales[self._get_variable_index(variable)]
        if self.amsgrad or variable.dtype != tf.float32:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        step = tf.cast(self.iterations + 1, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.handle,
            v=v.handle,
            beta1_power=tf.pow(tf.constant(self.beta_1, tf.float32), step),
            beta2_power=tf.pow(tf.constant(self.beta_2, tf.float32), step),
            lr=tf.cast(learning_rate, tf.float32),
            beta1=tf.constant(self.beta_1, tf.float32),
            beta2=tf.constant(self.beta_2, tf.float32),
            epsilon=tf.constant(self.epsilon, tf.float32),
            # The embedding's gradient arrives as IndexedSlices: dense, as Keras' own update
            # (and PyTorch's AdamW) makes it, so every row's moments decay each step.
            grad=tf.convert_to_tensor(gradient),
        )

    def _update_model_variables_moving_average(self, trainable_variables):
        """Keras' update (the first step copies the weights), every `EMA_EVERY` steps:
        `ema_momentum` is per update (`adamw` sets it)."""
        update = super()._update_model_variables_moving_average
        tf.cond(self.iterations % EMA_EVERY == 0, lambda: update(trainable_variables), lambda: None)

    def _get_current_learning_rate(self):
        # Keras gives the schedule its count of micro-batches under gradient accumulation; the
        # schedule counts updates (`iterations`, as without accumulation).
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _clip_gradients(self, grads):
        return grads  # clipped after the all-reduce, below

    def _all_reduce_sum_gradients(self, grads_and_vars):
        grads_and_vars = super()._all_reduce_sum_gradients(grads_and_vars)
        grads, variables = zip(*grads_and_vars, strict=True)
        grads = [_summed(g) for g in grads]
        if self.clip_norm and not self.gradient_accumulation_steps:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm)
        return list(zip(grads, variables, strict=True))

    def _backend_apply_gradients(self, grads, trainable_variables):
        """Under gradient accumulation: Keras' own branches (a `cond`) around updates that are
        cross-replica, which MirroredStrategy cannot run (merge_call inside control flow). Here
        each micro-batch's gradient is summed over replicas first, unconditionally, and the
        branch is taken in cross-replica context."""
        if not self.gradient_accumulation_steps:
            return super()._backend_apply_gradients(grads, trainable_variables)
        accumulators = [
            self._accumulated_gradients[self._get_variable_index(v)].value
            for v in trainable_variables
        ]
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        reduced = self._all_reduce_sum_gradients(list(zip(grads, variables, strict=True)))
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._accumulate, self._distribution_strategy, reduced, accumulators
        )

    def _accumulate(self, distribution, grads_and_vars, accumulators):
        for (grad, _), accumulator in zip(grads_and_vars, accumulators, strict=True):
            distribution.extended.update(
                accumulator,
                lambda a, g: a.assign_add(tf.convert_to_tensor(g)),
                (grad,),
                group=False,
            )
        last = (self._iterations + 1) % self.gradient_accumulation_steps == 0
        variables = [v for _, v in grads_and_vars]
        tf.cond(
            last, lambda: self._apply_accumulated(distribution, variables, accumulators), tf.no_op
        )

    def _apply_accumulated(self, distribution, variables, accumulators):
        """The update of the micro-batches' mean gradient, as `apply` makes it of one batch's:
        clipped by the global norm, weight decay, then Adam; the accumulators emptied."""
        steps = self.gradient_accumulation_steps
        scale = tf.constant(1.0 / steps)
        if self.clip_norm:
            norm = tf.linalg.global_norm([a.read_value() for a in accumulators]) * scale
            scale *= tf.minimum(1.0, self.clip_norm / tf.maximum(norm, 1e-12))
        lr, wd = self.learning_rate, self.weight_decay or 0.0

        def update(variable, accumulator):
            if wd and self._use_weight_decay(variable):
                variable.assign_sub(variable * tf.cast(wd * lr, variable.dtype))
            self.update_step(accumulator * tf.cast(scale, accumulator.dtype), variable, lr)
            accumulator.assign(tf.zeros_like(accumulator))

        for variable, accumulator in zip(variables, accumulators, strict=True):
            distribution.extended.update(variable, update, (accumulator,), group=False)
        return tf.no_op()


def _summed(gradient):
    """An embedding's gradient (IndexedSlices) with one row per token id, as a dense gradient
    has it. Autodiff gives one row per occurrence ([CLS] and [SEP] are in every text), and
    the global norm and Keras' own Adam (its square of the gradient) then sum the squares of
    the occurrences instead of squaring their sum."""
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    ids, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.size(ids))
    return tf.IndexedSlices(values, ids, gradient.dense_shape)


def adamw(
    total_steps: int,
    learning_rate: float,
    warmup_ratio: float,
    weight_decay: float,
    clip_norm: float,
    accumulation: int = 1,
    layer_scale=None,
    ema_momentum: float = 0.0,
) -> AdamW:
    """`accumulation`: micro-batches per update (--gradient_accumulation_steps); their gradients
    are averaged, then reduced over replicas and clipped, as one batch's. `layer_scale`: a
    variable path's learning-rate factor (`layer_scales`); `ema_momentum`: keep a moving average
    of the weights (0 = none)."""
    schedule = WarmupLinearDecay(learning_rate, total_steps, round(warmup_ratio * total_steps))
    optimizer = AdamW(
        clip_norm=clip_norm,
        layer_scale=layer_scale,
        use_ema=ema_momentum > 0,
        ema_momentum=ema_momentum**EMA_EVERY,  # per step -> per update
        learning_rate=schedule,
        weight_decay=weight_decay,
        epsilon=1e-6,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def layer_scales(layer_decay: float, depth, num_layers: int):
    """`path -> layer_decay ** (num_layers + 1 - depth(path))`: 1 for the head and pooler, one
    factor less for each encoder layer down, the embeddings lowest (ELECTRA's layer-wise
    decay); None when `layer_decay` is 1. `depth`: the family's `layer_depth`."""
    if layer_decay == 1:
        return None
    return lambda path: layer_decay ** (num_layers + 1 - depth(path, num_layers))
