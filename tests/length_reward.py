"""A user verifier for the tests: 1.0 for a completion with an even number of characters, so a model with random
weights still gets groups with right and wrong answers."""


def even_length(completion: str, answer: str) -> float:
    return float(len(completion) % 2 == 0)
