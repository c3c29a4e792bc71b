"""Plain English text shipped with the package; the built-in tokenizer is trained on it.

Every ``*.txt`` file here is read in sorted name order and split into paragraphs at blank lines.
The text was written for this project. Editing it changes the built-in tokenizer, so it needs a
new built-in version (``engine/builtin/spec.py``) and a new pinned digest.
"""
