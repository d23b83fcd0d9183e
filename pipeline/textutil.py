"""Small text helpers shared by the components."""

from __future__ import annotations

import re


def trie_pattern(words, space: str = r"[ \t]+") -> str:
    """One regular expression alternation for many words, factored by common prefixes.

    Python's ``re`` tries alternatives one by one at every position; a prefix trie makes the
    scan cost depend on the text, not on the size of the vocabulary. Spaces match ``space`` (any run
    of blanks and tabs by default); matching is meant to be case-insensitive (words are lower case).
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
            atom = space if ch == " " else re.escape(ch)
            branches.append(atom + build(node[ch]))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return build(trie)


def plain_blanks(text: str) -> str:
    """The text with Windows line endings as line breaks and no-break spaces as blanks. Same length, so
    offsets into it are offsets into ``text``: rules written for blanks, tabs and ``\\n`` read it instead."""
    if "\r" in text or "\u00a0" in text:
        return text.replace("\r\n", " \n").replace("\u00a0", " ")
    return text


def blanks(pattern: str) -> str:
    """``pattern`` with each literal space (outside a character class) matching any run of blanks and tabs.

    Phrases written with one space ("on admit", "up from") then also read notes typed with two spaces or
    a tab between the words; ``" ?"`` becomes ``"[ \\t]?"``. Not for verbose patterns (spaces are ignored there).
    """
    out = []
    i, n = 0, len(pattern)
    in_class = False
    depth = 0  # open groups
    behind = []  # depths of the open look-behinds (fixed width: spaces there stay as written)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "(":
            depth += 1
            if pattern.startswith(("(?<=", "(?<!"), i):
                behind.append(depth)
        elif ch == ")":
            if behind and behind[-1] == depth:
                behind.pop()
            depth -= 1
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # a "]" first in the class is a literal
                out.append("]")
                i += 1
            continue
        elif ch == " " and not behind:
            nxt = pattern[i + 1 : i + 2]
            out.append(r"[ \t]" if nxt and nxt in "?*+{" else r"[ \t]+")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)
