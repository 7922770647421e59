"""A small builder of ONNX graphs, and the steps every in-graph tokenizer shares: ragged rows
(flat values and row splits, as onnxruntime-extensions' ops give them) to dense ones, and the
special tokens, truncation and padding of `serving/pairs.py` in ONNX's own ops."""

import itertools

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from bert_keras.families import probe

CONTRIB = "ai.onnx.contrib"  # onnxruntime-extensions' operators
ML = "ai.onnx.ml"  # LabelEncoder: strings to ids


class Graph:
    """Nodes and constants, named uniquely, for `helper.make_graph`."""

    def __init__(self, prefix: str):
        self.nodes, self.initializers = [], []
        self.prefix, self._names = prefix, itertools.count()

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self._names)}"

    def const(self, value, dtype=None) -> str:
        array = np.array(value, dtype=dtype or (object if isinstance(value, str) else None))
        name = self.name("const")
        if array.dtype == object:
            tensor = helper.make_tensor(
                name, TensorProto.STRING, array.shape, [v.encode() for v in array.ravel()]
            )
        else:
            tensor = numpy_helper.from_array(array, name)
        self.initializers.append(tensor)
        return name

    def op(self, op_type: str, *inputs, outputs: int = 1, domain: str = "", **attributes):
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), names, domain=domain or None, **attributes)
        )
        return names[0] if outputs == 1 else names

    def op_named(self, op_type: str, first: str, name: str, extra=(), **attributes) -> str:
        """A node whose one output has this name (a graph output, or a model's input)."""
        self.nodes.append(helper.make_node(op_type, [first, *extra], [name], **attributes))
        return name

    def i64(self, *values) -> str:
        return self.const(np.array(values, np.int64))


def ragged_to_dense(g: Graph, values: str, splits: str, pad: str) -> str:
    """[rows, longest] from flat `values` and their row `splits` ([rows + 1]), `pad` (a
    one-element constant of the values' type) after each row's end."""
    starts, lengths = starts_lengths(g, splits)
    longest = g.op("ReduceMax", g.op("Concat", lengths, g.i64(0), axis=0), keepdims=1)
    j = g.op("Range", g.const(np.int64(0)), g.op("Squeeze", longest), g.const(np.int64(1)))
    return gather_ragged(g, values, starts, lengths, g.op("Unsqueeze", j, g.i64(0)), pad)


def starts_lengths(g: Graph, splits: str):
    starts = g.op("Slice", splits, g.i64(0), g.i64(-1), g.i64(0))
    ends = g.op("Slice", splits, g.i64(1), g.i64(2**62), g.i64(0))
    return starts, g.op("Sub", ends, starts)


def assemble(g: Graph, first, second, specials, max_seq_length: int) -> dict:
    """The backbone's int32 inputs from each text's ids (`first`, `second`: flat values and row
    splits): `serving.pairs.assemble` in ONNX ops, pairs truncated longest first."""
    starts_a, lengths_a = starts_lengths(g, first[1])
    if second is None:
        keep_a, seps = g.op("Min", lengths_a, g.const(np.int64(max_seq_length - 2))), 0
        total = g.op("Add", keep_a, g.const(np.int64(2)))
    else:
        seps = specials.pair_separators
        starts_b, lengths_b = starts_lengths(g, second[1])
        budget = max_seq_length - 2 - seps
        keep_a, keep_b = _longest_first(g, lengths_a, lengths_b, budget)
        total = g.op("Add", g.op("Add", keep_a, keep_b), g.const(np.int64(2 + seps)))
    longest = g.op("ReduceMax", g.op("Concat", total, g.i64(0), axis=0), keepdims=0)
    j = g.op("Range", g.const(np.int64(0)), longest, g.const(np.int64(1)))
    row_j = g.op("Unsqueeze", j, g.i64(0))  # [1, length]

    def column(x):
        return g.op("Unsqueeze", x, g.i64(1))  # [rows, 1]

    pad = g.i64(specials.pad_id)
    ids = g.op("Where", g.op("Less", row_j, column(total)), g.const(np.int64(specials.sep_id)), pad)
    after_a = g.op("Add", column(keep_a), g.const(np.int64(1)))  # the first position past a
    a = gather_ragged(g, first[0], starts_a, keep_a, g.op("Sub", row_j, g.const(np.int64(1))), pad)
    in_a = g.op("And", g.op("Greater", row_j, g.const(np.int64(0))), g.op("Less", row_j, after_a))
    ids = g.op("Where", in_a, a, ids)
    segments = g.op("Sub", ids, ids)  # zeros
    if second is not None:
        start_b = g.op("Add", after_a, g.const(np.int64(seps)))
        b_positions = g.op("Sub", row_j, start_b)  # [rows, length]
        b = gather_ragged(g, second[0], starts_b, keep_b, b_positions, pad)
        in_b = g.op(
            "And", g.op("GreaterOrEqual", row_j, start_b), g.op("Less", b_positions, column(keep_b))
        )
        ids = g.op("Where", in_b, b, ids)
        if seps == 1:  # BERT's template: segment 1 from the second text to its [SEP]
            later = g.op(
                "And", g.op("GreaterOrEqual", row_j, start_b), g.op("Less", row_j, column(total))
            )
            segments = g.op("Cast", later, to=TensorProto.INT64)
    ids = g.op(
        "Where", g.op("Equal", row_j, g.const(np.int64(0))), g.const(np.int64(specials.cls_id)), ids
    )
    mask = g.op("Cast", g.op("Less", row_j, column(total)), to=TensorProto.INT32)
    as_int32 = {"to": TensorProto.INT32}
    return {
        "token_ids": g.op("Cast", ids, **as_int32),
        "segment_ids": g.op("Cast", segments, **as_int32),
        "padding_mask": mask,
    }


def gather_ragged(g: Graph, values: str, starts: str, lengths: str, positions: str, pad: str):
    """values[starts[r] + positions[r, k]] where 0 <= positions < lengths[r], else `pad`."""
    column = g.op("Unsqueeze", lengths, g.i64(1))
    inside = g.op(
        "And",
        g.op("GreaterOrEqual", positions, g.const(np.int64(0))),
        g.op("Less", positions, column),
    )
    index = g.op("Add", g.op("Unsqueeze", starts, g.i64(1)), positions)
    extended = g.op("Concat", values, pad, axis=0)
    return g.op("Gather", extended, g.op("Where", inside, index, g.op("Size", values)), axis=0)


def _longest_first(g: Graph, first: str, second: str, budget: int):
    """`serving.pairs.longest_first` in ONNX ops."""
    n = g.const(np.int64(budget))
    half, odd = g.const(np.int64(budget // 2)), g.const(np.int64(budget // 2 + budget % 2))
    first_shorter = g.op("LessOrEqual", first, second)
    short = g.op("Min", first, second)
    halves = g.op("Greater", g.op("Mul", short, g.const(np.int64(2))), n)
    keep_short = g.op("Where", halves, half, short)
    keep_long = g.op("Where", halves, odd, g.op("Sub", n, short))
    fits = g.op("LessOrEqual", g.op("Add", first, second), n)
    keep_first = g.op("Where", fits, first, g.op("Where", first_shorter, keep_short, keep_long))
    keep_second = g.op("Where", fits, second, g.op("Where", first_shorter, keep_long, keep_short))
    return keep_first, keep_second


def without_nul(g: Graph, text: str, by: str) -> str:
    """Each NUL of the texts replaced `by` a string, by ONNX's own StringSplit: the extensions'
    operators read a string up to its first NUL."""
    pieces, counts = g.op("StringSplit", text, outputs=2, delimiter="\x00")  # [rows, p]
    if by:  # after each piece but a row's last (the rows are padded with "" to p pieces)
        k = g.op(
            "Range", g.const(np.int64(0)), g.op("Shape", pieces, start=1), g.const(np.int64(1))
        )
        last = g.op("Sub", g.op("Unsqueeze", counts, g.i64(1)), g.const(np.int64(1)))
        after = g.op(
            "Where",
            g.op("Less", g.op("Unsqueeze", k, g.i64(0)), last),
            g.const([by]),
            g.const([""]),
        )
        pieces = g.op("StringConcat", pieces, after, domain=CONTRIB)
    return g.op("StringJoin", pieces, g.const(""), g.const(np.int64(1)), domain=CONTRIB)


def map_characters(g: Graph, text: str, table: dict[str, str]) -> str:
    """`table` applied to each character. `StringMapping`'s table is lines of `key<TAB>value`
    with a value: tabs and line breaks (which BERT's pre-tokenizer makes spaces) are replaced
    before it, and deleted characters become one of them, taken out after it."""
    separators = {c: out for c, out in table.items() if c in "\t\n"}
    if any(out != " " for out in separators.values()):
        raise ValueError(f"the graph cannot map {separators}")
    if separators:
        text = replace(g, text, probe.char_class(separators), " ")
    marker = min((c for c, out in table.items() if out == ""), default=None)  # for each deleted
    table = {c: out or marker for c, out in table.items() if c not in separators and c != marker}
    chars, _, _, splits = g.op(
        "StringRegexSplitWithOffsets",
        text,
        g.const(["(?s)(.)"]),
        g.const(["(?s)."]),
        outputs=4,
        domain=CONTRIB,
    )
    mapped = g.op(
        "StringMapping",
        chars,
        domain=CONTRIB,
        map="\n".join(f"{c}\t{out}" for c, out in table.items()),
    )
    dense = ragged_to_dense(g, mapped, splits, g.const([""]))
    text = g.op("StringJoin", dense, g.const(""), g.const(np.int64(1)), domain=CONTRIB)
    return replace(g, text, probe.char_class(marker), "") if marker else text


def replace(g: Graph, text: str, pattern: str, by: str) -> str:
    return g.op("StringRegexReplace", text, g.const([pattern]), g.const([by]), domain=CONTRIB)
