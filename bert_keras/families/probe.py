"""What a Hugging Face normaliser or pre-tokenizer does to each code point, read from the
`tokenizers` library itself: the in-graph tokenizers take their character classes and tables
from here rather than from Unicode tables, because the library's are not TensorFlow's (docs/
families.md)."""

# The planes Unicode assigns in (0-3, and 14-16: tags, variation selectors, private use);
# planes 4-13 hold no character yet. Surrogates are no characters: no UTF-8 text holds them.
CODE_POINTS = [c for c in (*range(0x40000), *range(0xE0000, 0x110000)) if not 0xD800 <= c < 0xE000]
SEPARATOR = "|"  # no normaliser the graphs reproduce changes it or makes it


def changed(normalizer, separator: str = SEPARATOR) -> dict[str, str]:
    """Each character that a per-character normaliser changes, and what it makes of it, probed
    in one call (`separator`: a character it neither changes nor makes)."""
    chars = [chr(c) for c in CODE_POINTS if chr(c) != separator]
    outputs = normalizer.normalize_str(separator.join(chars)).split(separator)
    assert len(outputs) == len(chars), "the normaliser changed the probe's separator"
    return {c: out for c, out in zip(chars, outputs, strict=True) if out != c}


def split_classes(pre_tokenizer) -> dict[str, set[str]]:
    """The characters a pre-tokenizer splits at, dropping them (`whitespace`), or isolates
    (`punctuation`), each probed between two letters, in one call: `a c1 a c2 a ...`."""
    chars = [chr(c) for c in CODE_POINTS]
    words = pre_tokenizer.pre_tokenize_str("a" + "a".join(chars) + "a")
    covered = bytearray(2 * len(chars) + 1)
    alone = set()
    for word, (start, end) in words:
        covered[start:end] = b"\1" * (end - start)
        if end - start == 1 and start % 2:
            alone.add(word)
    return {
        "whitespace": {c for i, c in enumerate(chars) if not covered[2 * i + 1]},
        "punctuation": alone,
    }


def char_class(chars) -> str:
    """An RE2 character class matching exactly `chars` ("" for none), as ranges."""
    ranges = []
    for c in sorted(ord(x) for x in chars):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)
    return f"[{body}]" if body else ""
