"""Small text helpers shared by the components."""

from __future__ import annotations

import re


def trie_pattern(words) -> str:
    """One regular expression alternation for many words, factored by common prefixes.

    Python's ``re`` tries alternatives one by one at every position; a prefix trie makes the
    scan cost depend on the text, not on the size of the vocabulary. Spaces match any run of
    blanks; matching is meant to be case-insensitive (words are lower case).
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        branches = []
        for ch in sorted(k for k in node if k):
            atom = r"[ \t]+" if ch == " " else re.escape(ch)
            branches.append(atom + build(node[ch]))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return build(trie)
