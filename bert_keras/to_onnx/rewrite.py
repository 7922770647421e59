"""The encoder graph tf2onnx writes, rewritten for ONNX Runtime: the same arithmetic in fewer,
larger operators.

- A `Gemm` with constant weights becomes `MatMul` (+ `Add` of its bias): ONNX Runtime's dynamic
  quantization leaves a Gemm in float32, and tf2onnx writes most of an encoder's dense layers as
  Gemms (an int8 model kept 24 of its 37 weight matrices in float32).
- Keras' LayerNormalization, which tf2onnx writes as thirteen element-wise operators
  (moments, rsqrt, scale and shift), becomes ONNX's `LayerNormalization`.

docs/serving.md has the measurements.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper


def gemms_as_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attributes.get("alpha", 1.0) == 1.0 and not attributes.get("transA", 0)
        if node.op_type != "Gemm" or node.input[1] not in initializers or not plain:
            nodes.append(node)
            continue
        weights = node.input[1]
        if attributes.get("transB", 0):
            transposed = numpy_helper.to_array(initializers[weights]).T
            weights = f"{node.output[0]}/weights"
            model.graph.initializer.append(
                numpy_helper.from_array(np.ascontiguousarray(transposed), weights)
            )
        biased = len(node.input) > 2 and node.input[2] and attributes.get("beta", 1.0) != 0.0
        if biased and attributes.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        product = f"{node.output[0]}/matmul" if biased else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weights], [product], node.name))
        if biased:
            nodes.append(helper.make_node("Add", [product, node.input[2]], list(node.output)))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return without_unused_constants(model)


class _Graph:
    """Who makes and who takes each tensor, and the constants."""

    def __init__(self, graph: onnx.GraphProto):
        self.constants = {i.name: i for i in graph.initializer}
        self.takers: dict[str, list] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):
                self.takers.setdefault(name, []).append(node)

    def one(self, tensor: str, op_type: str, inputs=None):
        """The one node of `op_type` that takes `tensor` (with exactly `inputs`, if given)."""
        (node,) = [
            n
            for n in self.takers.get(tensor, [])
            if n.op_type == op_type and (inputs is None or list(n.input) == inputs)
        ]
        return node

    def constant(self, name: str):
        return numpy_helper.to_array(self.constants[name])  # KeyError: not a constant


def layer_norms_fused(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = _Graph(model.graph)
    replaced, removed = {}, set()
    for mean in [n for n in model.graph.node if n.op_type == "ReduceMean"]:
        try:
            nodes, fused, constants = _layer_norm(graph, mean)
        except (ValueError, KeyError):  # not the pattern
            continue
        model.graph.initializer.extend(constants)
        replaced[id(nodes[-1])] = fused
        removed.update(id(n) for n in nodes)
    dropped = removed - replaced.keys()
    kept = [replaced.get(id(n), n) for n in model.graph.node if id(n) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return without_unused_constants(model)


def without_unused_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """(ONNX Runtime warns of each one it drops.)"""
    used = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def _layer_norm(g: _Graph, mean):
    """(the pattern's nodes, the LayerNormalization, its constants) from the mean's ReduceMean:
    y = x * g + (-mean * g + beta), g = gamma / sqrt(variance + epsilon), over the last axis."""
    x, m = mean.input[0], mean.output[0]
    centred = g.one(m, "Sub", [x, m]).output[0]
    squared = g.one(centred, "Mul", [centred, centred])
    variance = g.one(squared.output[0], "ReduceMean")
    plus = g.one(variance.output[0], "Add")
    root = g.one(plus.output[0], "Sqrt")
    inverse = g.one(root.output[0], "Reciprocal")
    gain = g.one(inverse.output[0], "Mul")
    negated = g.one(m, "Neg")
    scaled = g.one(gain.output[0], "Mul", [x, gain.output[0]])
    shift = g.one(gain.output[0], "Mul", [negated.output[0], gain.output[0]])
    shifted = g.one(shift.output[0], "Add")
    out = g.one(shifted.output[0], "Add", [scaled.output[0], shifted.output[0]])
    nodes = [mean, g.one(m, "Sub"), squared, variance, plus, root, inverse, gain, negated]
    nodes += [scaled, shift, shifted, out]
    for node in nodes[:-1]:  # nothing outside the pattern takes its inner tensors
        if any(t not in nodes for o in node.output for t in g.takers.get(o, [])):
            raise ValueError("an inner tensor is used elsewhere")
    axes = [g.constant(mean.input[1]).tolist(), g.constant(variance.input[1]).tolist()]
    if axes != [[-1], [-1]]:
        raise ValueError("not over the last axis")
    name = out.output[0]
    constants = [
        numpy_helper.from_array(g.constant(t).reshape(-1).astype(np.float32), f"{name}/{what}")
        for t, what in ((gain.input[1], "scale"), (shifted.input[1], "bias"))
    ]
    epsilon = float(g.constant(plus.input[1]))
    fused = helper.make_node(
        "LayerNormalization",
        [x, f"{name}/scale", f"{name}/bias"],
        [name],
        f"{name}/layer_norm",
        axis=-1,
        epsilon=epsilon,
    )
    return nodes, fused, constants
