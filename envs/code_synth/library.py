"""The typed library of small primitives Code-Synth programs are built from.

Three value types: ``int``, ``str`` and ``list[int]``. Each :class:`Op` has typed inputs, one
output type, a Python expression template (what the reference implementation writes) and an
English template (what the spec says), with ``{a}``/``{b}`` for the inputs and ``{k}``/``{k0}``
/``{k1}`` for constants drawn when the op is used. Every op is total on its input types (never
raises) and grows its values at most by a bounded amount, so composed programs stay small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import itertools
import random

INT, STR, LIST = "int", "str", "list[int]"
TYPES = (INT, STR, LIST)


@dataclass(frozen=True)
class Op:
    """One primitive: ``inputs`` -> ``output``, its Python and English templates and its constant."""

    name: str
    inputs: tuple[str, ...]
    output: str
    py: str
    en: str
    const: Callable[[random.Random], Any] | None = None
    needs: str = ""  # a module the expression uses (imported inside the function)

    def bound(self, const: Any) -> Callable[..., Any]:
        """The op as a host-side function of its inputs only, with constant ``const`` (a value or a
        ``(k0, k1)`` pair) written into it as the reference source writes it (for the generator)."""
        key = (self.name, const)
        fn = _BOUND.get(key)
        if fn is None:
            # compiled once per (op, constant): the generator evaluates every candidate function on
            # a dozen inputs, and a plain positional call is several times cheaper than keywords
            fill = {"a": "a", "b": "b"}
            if isinstance(const, tuple):
                fill["k0"], fill["k1"] = repr(const[0]), repr(const[1])
            elif const is not None:
                fill["k"] = repr(const)
            params = "a, b" if len(self.inputs) > 1 else "a"
            expr = self.py.format(**fill)
            code = compile(f"lambda {params}: {expr}", f"<op {self.name}>", "eval")
            fn = _BOUND[key] = eval(code, {"itertools": itertools})  # noqa: S307 - our templates
        return fn

    def apply(self, ins: list[Any], const: Any) -> Any:
        """The op's value on ``ins`` with constant ``const`` (a value or a ``(k0, k1)`` pair)."""
        return self.bound(const)(*ins)


_BOUND: dict[tuple[str, Any], Callable[..., Any]] = {}


def _ints(lo: int, hi: int, skip: tuple[int, ...] = ()) -> Callable[[random.Random], int]:
    values = [v for v in range(lo, hi + 1) if v not in skip]
    return lambda rng: rng.choice(values)


def _chars(alphabet: str) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(alphabet)


def _pair(alphabet: str) -> Callable[[random.Random], tuple[str, str]]:
    return lambda rng: tuple(rng.sample(alphabet, 2))


_L, _I, _S = (LIST,), (INT,), (STR,)
OPS: tuple[Op, ...] = (
    # list -> list
    Op("sort_asc", _L, LIST, "sorted({a})", "{a} sorted in ascending order"),
    Op("sort_desc", _L, LIST, "sorted({a}, reverse=True)", "{a} sorted in descending order"),
    Op("sort_last_digit", _L, LIST, "sorted({a}, key=lambda e: (abs(e) % 10, e))",
       "{a} sorted by the last digit of each element's absolute value, ties broken by the smaller value first"),
    Op("reverse", _L, LIST, "{a}[::-1]", "{a} in reverse order"),
    Op("add_k", _L, LIST, "[e + {k} for e in {a}]", "{a} with {k} added to every element", _ints(-5, 9, (0,))),
    Op("mul_k", _L, LIST, "[e * {k} for e in {a}]", "{a} with every element multiplied by {k}", _ints(-2, 4, (0, 1))),
    Op("mod_k", _L, LIST, "[e % {k} for e in {a}]",
       "{a} with every element replaced by its remainder modulo {k} (as Python's %, never negative)", _ints(2, 9)),
    Op("abs_all", _L, LIST, "[abs(e) for e in {a}]", "{a} with every element replaced by its absolute value"),
    Op("keep_even", _L, LIST, "[e for e in {a} if e % 2 == 0]", "the even elements of {a}, in their order"),
    Op("keep_odd", _L, LIST, "[e for e in {a} if e % 2 != 0]", "the odd elements of {a}, in their order"),
    Op("keep_gt_k", _L, LIST, "[e for e in {a} if e > {k}]", "the elements of {a} greater than {k}, in their order",
       _ints(-3, 6)),
    Op("dedupe", _L, LIST, "list(dict.fromkeys({a}))",
       "{a} with repeated values removed, keeping the first occurrence of each"),
    Op("prefix_sums", _L, LIST, "[sum({a}[:i + 1]) for i in range(len({a}))]",
       "the running sums of {a} (element i is the sum of its first i + 1 elements)"),
    Op("running_max", _L, LIST, "[max({a}[:i + 1]) for i in range(len({a}))]",
       "the running maximum of {a} (element i is the largest of its first i + 1 elements)"),
    Op("diffs", _L, LIST, "[{a}[i + 1] - {a}[i] for i in range(len({a}) - 1)]",
       "the differences of consecutive elements of {a} (each element minus the one before it; one element fewer, "
       "empty for fewer than two elements)"),
    Op("take_k", _L, LIST, "{a}[:{k}]", "the first {k} elements of {a} (all of them if it has fewer)", _ints(1, 4)),
    Op("drop_k", _L, LIST, "{a}[{k}:]", "{a} without its first {k} elements (empty if it has fewer)", _ints(1, 3)),
    Op("run_lengths", _L, LIST, "[len(list(g)) for _, g in itertools.groupby({a})]",
       "the lengths of the runs of equal adjacent elements of {a}, in order", needs="itertools"),
    # list, int -> list
    Op("add_n", (LIST, INT), LIST, "[e + {b} for e in {a}]", "{a} with {b} added to every element"),
    Op("keep_gt_n", (LIST, INT), LIST, "[e for e in {a} if e > {b}]", "the elements of {a} greater than {b}, in their order"),
    Op("rotate_n", (LIST, INT), LIST, "({a}[{b} % len({a}):] + {a}[:{b} % len({a})]) if {a} else []",
       "{a} rotated left by {b} positions (the element at index {b} mod its length comes first; empty stays empty)"),
    Op("append_n", (LIST, INT), LIST, "{a} + [{b}]", "{a} with {b} appended at the end"),
    # list, list -> list
    Op("zip_add", (LIST, LIST), LIST, "[p + q for p, q in zip({a}, {b})]",
       "the element-wise sums of {a} and {b} (as long as the shorter of the two)"),
    Op("concat8", (LIST, LIST), LIST, "({a} + {b})[:8]", "the first 8 elements of {a} followed by {b}"),
    Op("common", (LIST, LIST), LIST, "[e for e in {a} if e in {b}]",
       "the elements of {a} that also occur in {b}, in their order (repeats kept)"),
    # list -> int
    Op("sum", _L, INT, "sum({a})", "the sum of the elements of {a} (0 if it is empty)"),
    Op("len", _L, INT, "len({a})", "the number of elements of {a}"),
    Op("max0", _L, INT, "max({a}, default=0)", "the largest element of {a} (0 if it is empty)"),
    Op("min0", _L, INT, "min({a}, default=0)", "the smallest element of {a} (0 if it is empty)"),
    Op("count_even", _L, INT, "sum(1 for e in {a} if e % 2 == 0)", "the number of even elements of {a}"),
    Op("first0", _L, INT, "{a}[0] if {a} else 0", "the first element of {a} (0 if it is empty)"),
    Op("last0", _L, INT, "{a}[-1] if {a} else 0", "the last element of {a} (0 if it is empty)"),
    Op("distinct", _L, INT, "len(set({a}))", "the number of distinct values in {a}"),
    Op("alt_sum", _L, INT, "sum({a}[0::2]) - sum({a}[1::2])",
       "the sum of the elements of {a} at even indices (0, 2, ...) minus the sum of those at odd indices"),
    # list, int -> int
    Op("count_eq", (LIST, INT), INT, "{a}.count({b})", "how many times {b} occurs in {a}"),
    Op("index_of", (LIST, INT), INT, "{a}.index({b}) if {b} in {a} else -1",
       "the index of the first occurrence of {b} in {a} (-1 if it does not occur)"),
    # int -> int
    Op("abs", _I, INT, "abs({a})", "the absolute value of {a}"),
    Op("iadd_k", _I, INT, "{a} + {k}", "{a} plus {k}", _ints(-9, 9, (0,))),
    Op("imul_k", _I, INT, "{a} * {k}", "{a} times {k}", _ints(-2, 3, (0, 1))),
    Op("imod_k", _I, INT, "{a} % {k}", "the remainder of {a} modulo {k} (as Python's %, never negative)", _ints(2, 9)),
    Op("idiv_k", _I, INT, "{a} // {k}", "{a} divided by {k}, rounded down (as Python's //)", _ints(2, 5)),
    Op("digit_sum", _I, INT, "sum(int(c) for c in str(abs({a})))", "the sum of the decimal digits of the absolute value of {a}"),
    Op("negate", _I, INT, "-{a}", "minus {a}"),
    # int, int -> int
    Op("iadd", (INT, INT), INT, "{a} + {b}", "{a} plus {b}"),
    Op("isub", (INT, INT), INT, "{a} - {b}", "{a} minus {b}"),
    Op("imax", (INT, INT), INT, "max({a}, {b})", "the larger of {a} and {b}"),
    Op("imin", (INT, INT), INT, "min({a}, {b})", "the smaller of {a} and {b}"),
    Op("idist", (INT, INT), INT, "abs({a} - {b})", "the absolute difference of {a} and {b}"),
    # int -> list / str
    Op("digits", _I, LIST, "[int(c) for c in str(abs({a}))]", "the decimal digits of the absolute value of {a}, most significant first"),
    Op("range_mod", _I, LIST, "list(range(abs({a}) % 6))",
       "the integers 0, 1, ... up to but not including (the absolute value of {a}) mod 6"),
    Op("to_str", _I, STR, "str({a})", "{a} written in decimal (with a leading - if negative)"),
    Op("to_bin", _I, STR, "bin(abs({a}))[2:]", "the binary digits of the absolute value of {a} (no prefix; \"0\" for 0)"),
    # str -> str
    Op("s_reverse", _S, STR, "{a}[::-1]", "{a} reversed"),
    Op("upper", _S, STR, "{a}.upper()", "{a} in upper case"),
    Op("lower", _S, STR, "{a}.lower()", "{a} in lower case"),
    Op("swapcase", _S, STR, "{a}.swapcase()", "{a} with upper and lower case swapped"),
    Op("no_vowels", _S, STR, "''.join(c for c in {a} if c.lower() not in 'aeiou')",
       "{a} with every vowel (a, e, i, o, u, either case) removed"),
    Op("replace", _S, STR, "{a}.replace({k0}, {k1})", "{a} with every {k0} replaced by {k1}", _pair("abeixy ")),
    Op("rle", _S, STR, "''.join(c + str(len(list(g))) for c, g in itertools.groupby({a}))",
       "the run-length code of {a}: each run of equal adjacent characters written as the character followed by "
       "the run's length (\"aab\" gives \"a2b1\"; \"\" gives \"\")", needs="itertools"),
    Op("sort_chars", _S, STR, "''.join(sorted({a}))", "the characters of {a} sorted by code point"),
    Op("dedupe_chars", _S, STR, "''.join(dict.fromkeys({a}))",
       "{a} with repeated characters removed, keeping the first occurrence of each"),
    Op("caesar", _S, STR, "''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if 'a' <= c <= 'z' else c for c in {a})",
       "{a} with every lowercase letter a-z shifted {k} places forward in the alphabet (wrapping from z to a), "
       "other characters unchanged", _ints(1, 5)),
    Op("strip", _S, STR, "{a}.strip()", "{a} without leading and trailing whitespace"),
    Op("s_take_k", _S, STR, "{a}[:{k}]", "the first {k} characters of {a} (all of it if it is shorter)", _ints(2, 5)),
    Op("words_rev", _S, STR, "' '.join({a}.split()[::-1])",
       "the words of {a} (split on whitespace) in reverse order, joined by single spaces"),
    # str, int -> str
    Op("s_rotate", (STR, INT), STR, "({a}[{b} % len({a}):] + {a}[:{b} % len({a})]) if {a} else ''",
       "{a} rotated left by {b} characters (the character at index {b} mod its length comes first; \"\" stays \"\")"),
    Op("s_take_n", (STR, INT), STR, "{a}[:abs({b})]", "the first |{b}| characters of {a} (all of it if it is shorter)"),
    # str, str -> str
    Op("concat", (STR, STR), STR, "{a} + {b}", "{a} followed by {b}"),
    Op("interleave", (STR, STR), STR, "''.join(p + q for p, q in zip({a}, {b})) + {a}[len({b}):] + {b}[len({a}):]",
       "the characters of {a} and {b} interleaved (first of {a}, first of {b}, second of {a}, ...), then the rest "
       "of the longer one"),
    Op("keep_common", (STR, STR), STR, "''.join(c for c in {a} if c in {b})",
       "the characters of {a} that also occur in {b}, in their order"),
    # str -> int
    Op("s_len", _S, INT, "len({a})", "the number of characters of {a}"),
    Op("count_char", _S, INT, "{a}.count({k})", "the number of times {k} occurs in {a}", _chars("abex ")),
    Op("vowels", _S, INT, "sum(1 for c in {a} if c.lower() in 'aeiou')",
       "the number of vowels (a, e, i, o, u, either case) in {a}"),
    Op("s_distinct", _S, INT, "len(set({a}))", "the number of distinct characters of {a}"),
    Op("word_count", _S, INT, "len({a}.split())", "the number of words of {a} (split on whitespace)"),
    # str -> list
    Op("codes_mod", _S, LIST, "[ord(c) % 10 for c in {a}]", "for each character of {a}, its code point mod 10"),
    Op("word_lens", _S, LIST, "[len(w) for w in {a}.split()]", "the lengths of the words of {a} (split on whitespace)"),
    # list -> str
    Op("join_digits", _L, STR, "''.join(str(e) for e in {a})",
       "the elements of {a} written in decimal one after another, without separators"),
    Op("letters", _L, STR, "''.join(chr(97 + e % 26) for e in {a})",
       "for each element e of {a}, the letter chr(97 + e mod 26) ('a' for 0, 'b' for 1, ...), joined into one string"),
)

BY_FIRST: dict[str, tuple[Op, ...]] = {t: tuple(op for op in OPS if op.inputs[0] == t) for t in TYPES}
"""The ops whose first input has each type (a pipeline step feeds its latest value in first)."""
CONVERT: dict[tuple[str, str], tuple[Op, ...]] = {
    (a, b): tuple(op for op in OPS if op.inputs == (a,) and op.output == b) for a in TYPES for b in TYPES if a != b
}
"""Unary ops from one type to another (used to feed a value to a call that wants another type)."""
