"""The ONNX models of an export: the Keras classifier's logits (tf2onnx), its int8 copy (ONNX
Runtime's dynamic quantization), and the whole model: tokenizer, logits, the SavedModel's
outputs."""

import copy
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import tensorflow as tf
from onnx import TensorProto, helper

from bert_keras.serving.bpe import BpeSpec
from bert_keras.serving.info import ExportInfo
from bert_keras.serving.pairs import Specials
from bert_keras.serving.wordpiece import Vocab
from bert_keras.to_onnx import bpe, graph, rewrite, sentencepiece, wordpiece

OPSET = 20
TF2ONNX_OPSET = 18  # tf2onnx 1.17's newest


def logits_model(classifier) -> onnx.ModelProto:
    """[batch] x the backbone's int32 inputs -> float32 logits [batch, labels], at OPSET."""
    import tf2onnx
    from onnx import version_converter

    names = list(classifier.input)
    specs = [tf.TensorSpec([None, None], tf.int32, name=n) for n in names]

    @tf.function(input_signature=specs, autograph=False)
    def logits(*inputs):
        return {"logits": classifier(dict(zip(names, inputs, strict=True)), training=False)}

    model, _ = tf2onnx.convert.from_function(logits, input_signature=specs, opset=TF2ONNX_OPSET)
    model = version_converter.convert_version(_without_erfc(model), OPSET)
    return rewrite.layer_norms_fused(rewrite.gemms_as_matmuls(model))


def _without_erfc(model: onnx.ModelProto) -> onnx.ModelProto:
    """TensorFlow's exact GELU calls Erfc, which ONNX lacks and tf2onnx leaves as it is: 1 - Erf.
    (Where erfc is tiny, so is GELU: the absolute error stays at float32's.)"""
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Erfc":
            nodes.append(node)
            continue
        erf, one = f"{node.name}/erf", f"{node.name}/one"
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(1.0), one))
        nodes.append(helper.make_node("Erf", list(node.input), [erf]))
        nodes.append(helper.make_node("Sub", [one, erf], list(node.output)))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def quantized(model: onnx.ModelProto, work: Path) -> onnx.ModelProto:
    """The model with its matrix products' weights in int8, a scale per output column
    (activations quantized per batch): per column keeps the float model's label on more texts
    (docs/serving.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = work / "float32.onnx", work / "int8.onnx"
    onnx.save(model, str(source))
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return onnx.load(str(target))


def save(model: onnx.ModelProto, path: Path):
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


class Pieces:
    """The tokenizer and output graphs of one export, put around any logits model."""

    def __init__(self, spec, hf_tokenizer, info: ExportInfo):
        self.info, self.spec = info, spec
        self.text_names = ("text", "text_pair") if info.text_pair else ("text",)
        self.raw_text = not token_ids_only(spec)
        if isinstance(spec, Vocab) and self.raw_text:
            table = wordpiece.character_table(hf_tokenizer)
            self._ids = lambda g, text: wordpiece.ids(g, text, spec, table)
        elif isinstance(spec, BpeSpec) and self.raw_text:
            self._ids = lambda g, text: bpe.ids(g, text, spec)
        elif self.raw_text:
            self._ids = lambda g, text: sentencepiece.ids(g, text, spec)

    def whole(self, logits: onnx.ModelProto) -> onnx.ModelProto:
        g = graph.Graph("tokenizer")
        model_inputs = [i.name for i in logits.graph.input]
        if self.raw_text:
            texts = [self._ids(g, name) for name in self.text_names]
            specials = _specials(self.spec)
            second = texts[1] if len(texts) > 1 else None
            ids = graph.assemble(g, texts[0], second, specials, self.info.max_seq_length)
            for name in model_inputs:
                g.op_named("Identity", ids[name], name)
            inputs = [wordpiece.text_input(name) for name in self.text_names]
        else:
            inputs = list(logits.graph.input)
        head = graph.Graph("outputs")
        outputs = _outputs(head, logits.graph.output[0].name, self.info)
        nodes = [*g.nodes, *logits.graph.node, *head.nodes]
        initializers = [*g.initializers, *logits.graph.initializer, *head.initializers]
        body = helper.make_graph(nodes, "bert_keras", inputs, outputs, initializers)
        opsets = [
            helper.make_opsetid("", OPSET),
            helper.make_opsetid(graph.CONTRIB, 1),
            helper.make_opsetid(graph.ML, 3),
        ]
        whole = helper.make_model(body, opset_imports=opsets, producer_name="bert_keras")
        whole.ir_version = logits.ir_version
        whole.metadata_props.extend(copy.deepcopy(list(logits.metadata_props)))
        return whole


def token_ids_only(spec) -> str:
    """Why the ONNX model of this tokenizer takes token ids, not raw text ("" where it takes
    text)."""
    if isinstance(spec, Vocab):
        return ""
    if isinstance(spec, BpeSpec):
        return bpe.refusal(spec)
    return sentencepiece.refusal(spec)


def _specials(spec):
    if isinstance(spec, Vocab):
        return Specials(spec.cls_id, spec.sep_id, spec.pad_id)
    return spec.specials


def _outputs(g: graph.Graph, logits: str, info: ExportInfo) -> list:
    """The SavedModel's outputs for its problem type, from the logits."""
    names = np.array(info.label_names, dtype=object)
    floats = helper.make_tensor_value_info
    if info.problem_type == "regression":
        g.op_named("Squeeze", logits, "score", extra=[g.i64(1)])
        return [floats("score", TensorProto.FLOAT, [None])]
    if info.problem_type == "single_label":
        g.op_named("Softmax", logits, "probabilities", axis=-1)
        best = g.op("ArgMax", logits, axis=1, keepdims=0)
        g.op_named("Cast", best, "label_id", to=TensorProto.INT32)
        g.op_named("Gather", g.const(names), "label", extra=[best], axis=0)
        return [
            floats("probabilities", TensorProto.FLOAT, [None, len(names)]),
            floats("label_id", TensorProto.INT32, [None]),
            floats("label", TensorProto.STRING, [None]),
        ]
    probabilities = g.op_named("Sigmoid", logits, "probabilities")
    thresholds = g.const(np.array(info.thresholds or [0.5] * len(names), np.float32))
    hot = g.op("GreaterOrEqual", probabilities, thresholds)
    g.op_named("Cast", hot, "predicted", to=TensorProto.INT32)
    _predicted_names(g, hot, names)
    return [
        floats("probabilities", TensorProto.FLOAT, [None, len(names)]),
        floats("predicted", TensorProto.INT32, [None, len(names)]),
        floats("labels", TensorProto.STRING, [None, None]),
    ]


def _predicted_names(g: graph.Graph, hot: str, names: np.ndarray):
    """Each row's predicted names in label order, padded with "" to the most of any row."""
    n = len(names)
    hot = g.op("Cast", hot, to=TensorProto.INT64)
    rank = g.op("Mul", hot, g.const(np.arange(n, 0, -1, dtype=np.int64)))  # earlier labels first
    order, position = g.op("TopK", rank, g.i64(n), axis=1, outputs=2)
    chosen = g.op("Greater", order, g.const(np.int64(0)))
    named = g.op("Gather", g.const(names), position, axis=0)
    named = g.op("Where", chosen, named, g.const(""))
    counts = g.op("ReduceSum", hot, g.i64(1), keepdims=0)
    most = g.op("ReduceMax", g.op("Concat", counts, g.i64(0), axis=0), keepdims=1)
    g.op_named("Slice", named, "labels", extra=[g.i64(0), most, g.i64(1)])
