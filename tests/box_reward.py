"""A user verifier for the tests: 1.0 when the completion writes its answer in a box (a format reward)."""


def has_box(completion: str, answer: str) -> float:
    return float("\\boxed{" in completion)
