"""Natural-language understanding for the router: vocabulary (jieba + names), time, numbers and phrasing rules.

Everything here is pure and synchronous once the vocabulary is loaded, so ``crmbot parse`` has no side effects
and answers in well under a millisecond per line after warm-up.
"""
