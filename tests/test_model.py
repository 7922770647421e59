"""The classifier's speed-ups change no result: the [CLS]-only last layer gives the full
encoder's output and gradients; the fused AdamW update is Keras' AdamW on summed gradients."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert_keras import backup, checkpoint, model, optimization
from bert_keras.errors import UsageError
from bert_keras.families import for_model_type
from bert_keras.families.transformer import ClsOnlyEncoderLayer

BERT = for_model_type("bert", "")


def _batch(vocabulary_size: int) -> dict:
    rng = np.random.default_rng(0)
    mask = np.ones((4, 13), "int32")
    mask[1, 7:], mask[2, 3:] = 0, 0  # padded rows: the [CLS] query must not see the padding
    ids = rng.integers(1000, vocabulary_size, (4, 13)).astype("int32")
    ids[:, 0] = 101
    segments = np.zeros_like(ids)
    segments[0, 6:] = 1
    return {"token_ids": ids * mask, "segment_ids": segments, "padding_mask": mask}


@pytest.mark.parametrize("pooling", ["cls", "pooler"])
def test_cls_only_last_layer_equals_the_full_encoder(tiny_bert, pooling):
    backbone = model.load_backbone(checkpoint.resolve(str(tiny_bert), 64), 0.0)
    classifier = model.build_classifier(BERT, backbone, 6, pooling, 0.0)
    assert any(isinstance(layer, ClsOnlyEncoderLayer) for layer in classifier.layers)
    # The same head on the full backbone's output: the reference.
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in BERT.inputs}
    full = backbone(inputs)
    pooled = full["sequence_output"][:, 0, :] if pooling == "cls" else full["pooled_output"]
    reference = keras.Model(inputs, classifier.get_layer("logits")(pooled))
    x, y = _batch(backbone.vocabulary_size), np.array([0, 1, 2, 3])

    def logits_and_gradients(m):
        with tf.GradientTape() as tape:
            logits = m(x, training=True)
            loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        weights = list(classifier.trainable_weights)
        grads = tape.gradient(loss, [w.value for w in weights])
        return logits.numpy(), {
            w.path: tf.convert_to_tensor(g).numpy()
            for w, g in zip(weights, grads, strict=True)
            if g is not None
        }

    got, got_grads = logits_and_gradients(classifier)
    want, want_grads = logits_and_gradients(reference)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want).max() > 1e-3  # not trivially equal
    assert got_grads.keys() == want_grads.keys()
    for path, grad in want_grads.items():
        np.testing.assert_allclose(got_grads[path], grad, atol=1e-5, err_msg=path)


def test_checkpoints_from_before_the_cls_only_layer_still_load(tiny_bert, tmp_path):
    """Runs trained before the change keep working for export and evaluation."""
    ckpt = checkpoint.resolve(str(tiny_bert), 64)
    keras.utils.set_random_seed(3)
    backbone = model.load_backbone(ckpt, 0.0)
    old = model.build_classifier(BERT, backbone, 6, "cls", 0.0, first_token_only=False)
    best = tmp_path / "best.weights.h5"
    old.save_weights(str(best))
    keras.utils.set_random_seed(4)  # another random head: only loading can make them agree
    loaded = model.load_best(best, ckpt, "cls", 6)
    x = _batch(30522)
    np.testing.assert_allclose(loaded(x).numpy(), old(x).numpy(), atol=1e-5)


def test_a_backup_from_before_the_cls_only_layer_is_refused_in_one_line(tiny_bert, tmp_path):
    """Its optimizer state cannot be mapped onto the new layout: a clear error, not a traceback."""
    ckpt = checkpoint.resolve(str(tiny_bert), 64)

    def compiled(first_token_only):
        backbone = model.load_backbone(ckpt, 0.0)
        m = model.build_classifier(BERT, backbone, 6, "cls", 0.0, first_token_only)
        m.compile(optimizer=keras.optimizers.AdamW(), loss="sparse_categorical_crossentropy")
        m.optimizer.build(m.trainable_variables)
        return m

    folder = tmp_path / "backup" / "step-4"
    folder.mkdir(parents=True)
    compiled(False).save_weights(str(folder / backup.WEIGHTS))
    (folder / backup.STATE).write_text("{}")
    with pytest.raises(UsageError, match=r"older bert_keras.*--overwrite") as error:
        backup.restore(tmp_path / "backup", compiled(True), {})
    assert "\n" not in str(error.value)


def test_mean_pooling_keeps_the_full_encoder(tiny_bert):
    backbone = model.load_backbone(checkpoint.resolve(str(tiny_bert), 64), 0.0)
    classifier = model.build_classifier(BERT, backbone, 6, "mean", 0.0)
    assert not any(isinstance(layer, ClsOnlyEncoderLayer) for layer in classifier.layers)


def test_mean_pooling_averages_the_real_tokens_only(tiny_bert):
    """The pooled vector is numpy's mean over the unpadded positions of the encoder's output,
    and a row's logits do not change when more padding follows it."""
    backbone = model.load_backbone(checkpoint.resolve(str(tiny_bert), 64), 0.0)
    classifier = model.build_classifier(BERT, backbone, 6, "mean", 0.0)
    pooled = keras.Model(classifier.inputs, classifier.get_layer("mean_pooling").output)
    batch = _batch(backbone.vocabulary_size)
    sequence = np.asarray(backbone(batch)["sequence_output"])
    mask = batch["padding_mask"].astype(bool)
    want = np.stack([sequence[i][mask[i]].mean(axis=0) for i in range(len(mask))])
    np.testing.assert_allclose(np.asarray(pooled(batch)), want, rtol=1e-5, atol=1e-6)
    longer = {k: np.pad(v, ((0, 0), (0, 20))) for k, v in batch.items()}  # 20 more pads
    np.testing.assert_allclose(classifier(longer), classifier(batch), rtol=1e-4, atol=1e-5)


def _train(optimizer_class) -> list:
    """Three epochs of a tiny model with an embedding whose batches repeat token ids."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(50, 8)(inputs)
    x = keras.layers.LayerNormalization()(keras.layers.GlobalAveragePooling1D()(x))
    m = keras.Model(inputs, keras.layers.Dense(3)(x))
    optimizer = optimizer_class(
        clip_norm=1.0,
        learning_rate=optimization.WarmupLinearDecay(1e-2, 12, 2),
        weight_decay=0.01,
        epsilon=1e-6,
    )
    optimizer.exclude_from_weight_decay(var_names=optimization.NO_DECAY)
    m.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    features = np.random.default_rng(1).integers(0, 20, (64, 5))  # ids repeat within a batch
    m.fit(features, np.arange(64) % 3, batch_size=16, epochs=3, verbose=0, shuffle=False)
    return [w.numpy() for w in m.weights]


class KerasUpdateOnDenseGradients(optimization.AdamW):
    def update_step(self, gradient, variable, learning_rate):
        gradient = tf.convert_to_tensor(gradient)
        return keras.optimizers.AdamW.update_step(self, gradient, variable, learning_rate)


def test_fused_adamw_equals_keras_adamw():
    fused, reference = _train(optimization.AdamW), _train(KerasUpdateOnDenseGradients)
    start = _train(lambda **kw: optimization.AdamW(**{**kw, "learning_rate": 0.0}))
    for got, want, before in zip(fused, reference, start, strict=True):
        assert np.abs(want - before).max() > 1e-3  # trained
        np.testing.assert_allclose(got, want, atol=1e-6)


def _train_dense(optimizer) -> list:
    """Three epochs of a model without embeddings (Dense, LayerNorm, Dense)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.LayerNormalization()(keras.layers.Dense(8, activation="gelu")(inputs))
    m = keras.Model(inputs, keras.layers.Dense(3)(x))
    optimizer.exclude_from_weight_decay(var_names=optimization.NO_DECAY)
    m.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    features = np.random.default_rng(1).normal(size=(64, 6)).astype("float32") * 10
    m.fit(features, np.arange(64) % 3, batch_size=16, epochs=3, verbose=0, shuffle=False)
    return [w.numpy() for w in m.weights]


def test_adamw_equals_stock_keras_adamw_with_global_clipping():
    """The project's AdamW (its clipping after the sum, its fused kernel) against Keras' own
    AdamW with `global_clipnorm`, on one device where the two clip the same gradient."""
    settings = dict(weight_decay=0.01, epsilon=1e-6)

    def ours(clip_norm):
        schedule = optimization.WarmupLinearDecay(1e-2, 12, 2)
        return optimization.AdamW(clip_norm=clip_norm, learning_rate=schedule, **settings)

    schedule = optimization.WarmupLinearDecay(1e-2, 12, 2)
    stock = keras.optimizers.AdamW(global_clipnorm=0.1, learning_rate=schedule, **settings)
    got, want = _train_dense(ours(0.1)), _train_dense(stock)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    unclipped = _train_dense(ours(1e6))  # the clip was at work
    assert max(np.abs(a - b).max() for a, b in zip(got, unclipped, strict=True)) > 1e-3


def test_embedding_gradients_are_summed_per_token():
    occurrences = tf.IndexedSlices(
        tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        tf.constant([4, 1, 4]),
        tf.constant([6, 2]),
    )
    summed = optimization._summed(occurrences)
    assert sorted(summed.indices.numpy().tolist()) == [1, 4]
    np.testing.assert_array_equal(
        tf.convert_to_tensor(summed).numpy(), tf.convert_to_tensor(occurrences).numpy()
    )
    # What the norm (and Keras' squared gradient) sees: 6^2 + 8^2 for token 4, not 1+4+25+36.
    assert tf.reduce_sum(summed.values**2).numpy() == pytest.approx(6**2 + 8**2 + 3**2 + 4**2)


def _tiny_classifier(tiny_bert, *flags: str):
    """The trainer's compiled classifier of the tiny BERT (mean pooling: every layer used) with
    a constant learning rate of 1e-3, no decay, clipping or dropout, and these flags."""
    from bert_keras import train
    from bert_keras.config import RunConfig
    from bert_keras.task import Task

    args = [f"--model={tiny_bert}", "--pooling=mean", "--dropout=0", "--learning_rate=1e-3"]
    args += ["--warmup_ratio=0", "--weight_decay=0", "--clip_norm=0", *flags]
    config = RunConfig.parse(args)
    keras.utils.set_random_seed(0)
    ckpt = checkpoint.resolve(str(tiny_bert), 128)
    # 10^6 steps: the linear decay leaves the rate at 1e-3 for the few steps taken here.
    return train.make_classifier(config, ckpt, Task("single_label", ("a", "b", "c")), 10**6)


def _expected_layer_rate(path: str, decay: float, layers: int = 2) -> float:
    """ELECTRA's layer-wise decay, written out: the head at 1, encoder layer i at decay^(L-i),
    the embeddings at decay^(L+1)."""
    if "transformer_layer_" in path:
        return decay ** (layers - int(path.split("transformer_layer_")[1].split("/")[0]))
    return decay ** (layers + 1) if "embedding" in path else 1.0


def _first_update(tiny_bert, *flags: str) -> dict:
    """Each trainable variable's change in one training step, by path."""
    classifier = _tiny_classifier(tiny_bert, *flags)
    batch = _batch(json.loads((tiny_bert / "config.json").read_text())["vocab_size"])
    before = {v.path: v.numpy() for v in classifier.trainable_variables}
    classifier.train_on_batch(batch, np.array([0, 1, 2, 0]))
    return {v.path: v.numpy() - before[v.path] for v in classifier.trainable_variables}


def test_layer_decay_scales_each_layers_update(tiny_bert):
    """The first step's gradient does not depend on the rates: each weight's move with decay
    0.5 is its move without, times its layer's factor."""
    decayed, plain = _first_update(tiny_bert, "--layer_decay=0.5"), _first_update(tiny_bert)
    factors = set()
    for path, move in plain.items():
        if not np.abs(move).max():
            continue  # the unused pooler
        factor = _expected_layer_rate(path, 0.5)
        np.testing.assert_allclose(decayed[path], factor * move, rtol=1e-3, atol=1e-8)
        factors.add(factor)
    assert factors == {0.125, 0.25, 0.5, 1.0}  # embeddings, two layers, head


def test_layer_decay_is_refused_for_albert():
    with pytest.raises(UsageError, match=r"--layer_decay=0.8: an albert model shares one set"):
        for_model_type("albert", "").check_layer_decay(0.8)


def test_validation_sees_the_moving_average_and_training_the_weights(tiny_bert):
    """With --ema_momentum, what validation and the best checkpoint see at an epoch's end
    (between the two swaps `callbacks.for_run` places) is the average of the weights after every
    `EMA_EVERY`-th step (the first, the fifth, ...; epochs here end between them), computed here
    in numpy; training goes on from the weights themselves."""
    from bert_keras.callbacks import EmaWeights
    from bert_keras.optimization import EMA_EVERY

    momentum, steps = 0.6, EMA_EVERY + 2
    classifier = _tiny_classifier(tiny_bert, f"--ema_momentum={momentum}")
    batch = _batch(json.loads((tiny_bert / "config.json").read_text())["vocab_size"])
    after_step, at_validation = [], []

    def snapshot(into):
        return keras.callbacks.LambdaCallback(
            **{into[0]: lambda *_, **__: into[1].append([v.numpy() for v in classifier.weights])}
        )

    run_callbacks = [
        snapshot(("on_train_batch_end", after_step)),
        EmaWeights(),
        snapshot(("on_epoch_end", at_validation)),
        EmaWeights(),
    ]
    dataset = tf.data.Dataset.from_tensors((batch, np.array([0, 1, 2, 0]))).repeat()
    classifier.fit(
        dataset, epochs=2, steps_per_epoch=steps, callbacks=run_callbacks, verbose=0, shuffle=False
    )
    trainable = [i for i, w in enumerate(classifier.weights) if w.trainable]
    kept = momentum**EMA_EVERY
    average = [after_step[0][i] for i in trainable]  # Keras' first step: the weights
    for step, weights in enumerate(after_step[1:], start=2):
        if (step - 1) % EMA_EVERY == 0:
            average = [
                kept * a + (1 - kept) * weights[i] for a, i in zip(average, trainable, strict=True)
            ]
        if step % steps == 0:  # an epoch's end
            seen = at_validation[step // steps - 1]
            for a, i in zip(average, trainable, strict=True):
                np.testing.assert_allclose(seen[i], a, rtol=1e-5, atol=1e-6)
    assert (
        max(np.abs(a - after_step[-1][i]).max() for a, i in zip(average, trainable, strict=True))
        > 1e-4
    )
    for w, last in zip(classifier.weights, after_step[-1], strict=True):
        # Not the average after fit (Keras swaps by sums and differences: within a rounding).
        np.testing.assert_allclose(w.numpy(), last, atol=1e-7)
