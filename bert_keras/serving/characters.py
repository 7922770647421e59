"""Character-level text edits in the graph, shared by the in-graph tokenizers: a character class
replaced, and each character mapped through a table (where TF's own Unicode tables are not the
Hugging Face tokenizer's)."""

import tensorflow as tf


def replace(text, char_class: str, rewrite: str):
    """Every match of an RE2 `char_class` ("" matches nothing) rewritten (`\\0`: the match)."""
    return tf.strings.regex_replace(text, char_class, rewrite) if char_class else text


def literal(string: str) -> str:
    """An RE2 pattern matching `string` literally."""
    return "".join(f"\\x{{{ord(c):x}}}" for c in string)


class CodePointMap(tf.Module):
    """Each character through a table (a character mapping to several, such as `İ` to `i̇`, by a
    replace of its own), the rest unchanged."""

    def __init__(self, mapping: dict[str, str]):
        super().__init__()
        single = {k: v for k, v in mapping.items() if len(v) == 1}
        self.several = {k: v for k, v in mapping.items() if len(v) != 1}
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([ord(k) for k in single], tf.int32),
                tf.constant([ord(v) for v in single.values()], tf.int32),
            ),
            default_value=-1,
        )

    def __call__(self, text):
        for char, replacement in self.several.items():
            text = replace(text, literal(char), replacement)
        code_points = tf.strings.unicode_decode(text, "UTF-8")
        mapped = tf.ragged.map_flat_values(self.table.lookup, code_points)
        code_points = tf.ragged.map_flat_values(tf.where, mapped < 0, code_points, mapped)
        return tf.strings.unicode_encode(code_points, "UTF-8")
