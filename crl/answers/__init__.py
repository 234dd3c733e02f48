"""Reading math answers as models and datasets write them: the final answer's span (extraction by position),
normalisation, a bounded LaTeX parser that never evaluates model text, and equivalence (exact arithmetic,
structures, relations). The ``math`` verifier (crl/verifiers/math.py) is built on these."""
