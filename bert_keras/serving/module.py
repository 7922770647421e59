"""The model with its tokenizer in front: what an export saves and a server runs.

`signatures()`:
- `serving_default`: `text` (and `text_pair` for a sentence-pair model), tf.string [batch] ->
  (`OUTPUTS`, by problem type)
  - single-label: `probabilities` float32 [batch, labels] (softmax), `label_id` int32 [batch],
    `label` tf.string [batch];
  - multi-label: `probabilities` float32 [batch, labels] (a sigmoid each), `predicted` int32
    [batch, labels] (1 where a probability reaches its label's decision threshold), `labels`
    tf.string [batch, most labels of a row in the batch]: each row's predicted names in label
    order, padded with "" (dense, so TF Serving's REST and gRPC APIs carry it);
  - regression: `score` float32 [batch];
- `serve_token_ids`: the backbone's inputs (int32 [batch, tokens], named as the model names
  them) -> the same, for clients that tokenize themselves.
"""

import tensorflow as tf

# Rows per model call inside one request (see TextClassifier.logits_by_length); the measurement
# that chose it is in docs/performance.md.
CHUNK_ROWS = 8


OUTPUTS = {
    "single_label": {
        "probabilities": "float32 [batch, labels]",
        "label_id": "int32 [batch]",
        "label": "string [batch]",
    },
    "multi_label": {
        "probabilities": "float32 [batch, labels]",
        "predicted": "int32 [batch, labels]",
        "labels": "string [batch, most labels predicted for a row], padded with empty strings",
    },
    "regression": {"score": "float32 [batch]"},
}


class TextClassifier(tf.Module):
    def __init__(
        self,
        classifier,
        tokenizer: tf.Module,
        label_names,
        text_pair: bool = False,
        problem_type: str = "single_label",
        thresholds=None,
    ):
        """`classifier`: a Keras model from a dict of int32 [batch, tokens] inputs to logits;
        `tokenizer`: an in-graph tokenizer that gives those inputs from text; `thresholds`:
        multi-label decision thresholds, one per label (default 0.5)."""
        super().__init__()
        # The weights alone are tracked: tracking the Keras model would save its optimizer's
        # state too. And the tf.Variables inside the Keras variables, not the Keras variables:
        # those save as copies ("Variable_N") that the checkpoint restores while the graph reads
        # the originals, so a session-based loader (TF Serving, saved_model_cli run) fails with
        # "Could not find variable ..." (tensorflow/serving#2250, keras-team/keras#20095);
        # tf.saved_model.load hides it.
        self.weights = [w.value for w in classifier.weights]
        self._forward = lambda inputs: classifier(inputs, training=False)
        self.input_names = list(classifier.input)
        self.tokenizer = tokenizer
        self.text_names = ("text", "text_pair") if text_pair else ("text",)
        self.label_names = list(label_names)
        self.problem_type = problem_type
        self.thresholds = list(thresholds or [0.5] * len(self.label_names))

    def signatures(self) -> dict:
        """Each signature's inputs follow from its specs: the text inputs, and the model's own
        input names. No autograph: there is no Python control flow to convert, and with it two
        full runs failed at export inside autograph-converted calls."""
        texts = {name: tf.TensorSpec([None], tf.string, name=name) for name in self.text_names}
        ids = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in self.input_names}
        serve_text = tf.function(
            lambda inputs: self.classify(self.tokenizer(*(inputs[n] for n in self.text_names))),
            input_signature=[texts],
            autograph=False,
        )
        serve_ids = tf.function(self.classify, input_signature=[ids], autograph=False)
        return {
            "serving_default": serve_text.get_concrete_function(),
            "serve_token_ids": serve_ids.get_concrete_function(),
        }

    def classify(self, inputs: dict) -> dict:
        logits = self.logits_by_length({name: inputs[name] for name in self.input_names})
        if self.problem_type == "regression":
            return {"score": logits[:, 0]}
        names = tf.constant(self.label_names)
        if self.problem_type == "multi_label":
            probabilities = tf.sigmoid(logits)
            predicted = probabilities >= tf.constant(self.thresholds, tf.float32)
            rows = tf.broadcast_to(names, tf.shape(predicted))
            return {
                "probabilities": probabilities,
                "predicted": tf.cast(predicted, tf.int32),
                "labels": tf.ragged.boolean_mask(rows, predicted).to_tensor(default_value=""),
            }
        label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {
            "probabilities": tf.nn.softmax(logits),
            "label_id": label_id,
            "label": tf.gather(names, label_id),
        }

    def logits_by_length(self, inputs: dict):
        """The model on rows sorted by length, CHUNK_ROWS at a time, each chunk cut to its own
        longest row; logits back in request order.

        A request's batch is padded to its longest text, and attention and dense layers would
        spend most of their time on padding. Masked positions change no real token's output, so
        cutting them changes nothing but float summation order. At least 1 column: the model
        reads column 0 even for an all-padding row.
        """
        mask = inputs["padding_mask"]
        positions = tf.range(1, tf.shape(mask)[1] + 1)[None, :]
        # Up to the last real token (clients of serve_token_ids may pad anywhere).
        extent = tf.reduce_max(tf.where(mask != 0, positions, 0), axis=1)
        rows = tf.shape(extent)[0]
        # A request of one chunk skips the sort and the loop, whose ops cost more than the
        # model at batch 1 (a request of none goes round the loop no times).
        return tf.cond(
            (rows > 0) & (rows <= CHUNK_ROWS),
            lambda: self._logits(
                {n: v[:, : tf.maximum(tf.reduce_max(extent), 1)] for n, v in inputs.items()}
            ),
            lambda: self._logits_in_chunks(inputs, extent),
        )

    def _logits(self, inputs: dict):
        return tf.cast(self._forward(inputs), tf.float32)

    def _logits_in_chunks(self, inputs: dict, extent):
        order = tf.argsort(extent, stable=True)
        rows = tf.shape(order)[0]
        chunks = (rows + CHUNK_ROWS - 1) // CHUNK_ROWS

        def chunk_logits(i, results):
            chunk = order[i * CHUNK_ROWS : tf.minimum((i + 1) * CHUNK_ROWS, rows)]
            width = tf.maximum(tf.reduce_max(tf.gather(extent, chunk)), 1)
            cut = {name: tf.gather(value, chunk)[:, :width] for name, value in inputs.items()}
            return i + 1, results.write(i, self._logits(cut))

        results = tf.TensorArray(
            tf.float32, size=chunks, infer_shape=False, element_shape=[None, len(self.label_names)]
        )
        _, results = tf.while_loop(lambda i, _: i < chunks, chunk_logits, [tf.constant(0), results])
        return tf.gather(results.concat(), tf.math.invert_permutation(order))
