"""Warmup records: PredictionLog requests that TF Serving replays when it loads a version,
before the first client's request (`assets.extra/tf_serving_warmup_requests`)."""

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

TEXTS = [
    "i feel great",
    "",
    "i didnt feel humiliated",
    "i can go from feeling so hopeless to so damned hopeful just from being around someone who "
    "cares and is awake",
    "im grabbing a minute to post i feel greedy wrong",
    "i am ever feeling nostalgic about the fireplace i will know that it is still on the property",
    "i have been with petronas for years i feel that petronas has performed well and made a huge "
    "profit " * 20,  # longer than any max_seq_length: the truncation path
    "ive been feeling a little burdened lately wasnt sure why that was",
]


def records(model_name: str, module) -> list[bytes]:
    """Batches of 1 and 8 texts (or pairs) for `serving_default`, and 8 rows of ids for
    `serve_token_ids`, for a `serving.module.TextClassifier`."""
    pairs = TEXTS[::-1]
    texts = {"text": TEXTS, "text_pair": pairs}
    requests = [
        ("serving_default", {name: texts[name][:n] for name in module.text_names})
        for n in (1, len(TEXTS))
    ]
    ids = module.tokenizer(*(tf.constant(texts[name]) for name in module.text_names))
    requests.append(("serve_token_ids", {name: ids[name] for name in module.input_names}))
    return [_record(model_name, signature, inputs) for signature, inputs in requests]


def _record(model_name: str, signature: str, inputs: dict) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        dtype = tf.string if isinstance(value, list) else None
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    return log.SerializeToString()


def write(path, records_: list[bytes]):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records_:
            writer.write(record)
