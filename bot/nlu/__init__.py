"""The toolkit matchers are written with: text shaping (``text``), cue words several capabilities share
(``cues``), the vocabulary of names (jieba + an Aho-Corasick automaton, ``vocabulary``), time expressions
(``timeparse``), amounts and discounts (``numbers``), and ``reading``: the line being read with the extractors
every capability needs (which customer it names, a future moment).

Everything here is pure and synchronous once the vocabulary is loaded, so ``crmbot parse`` has no side effects
and answers in well under a millisecond per line after warm-up.
"""
