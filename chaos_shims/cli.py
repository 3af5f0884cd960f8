"""CLI (being written)."""


def main() -> int:
    return 0
