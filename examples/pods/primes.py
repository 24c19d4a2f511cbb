"""primes.py - the same job as primes.c, in pure Python, for wasm vs CPython vs native.

Counts the primes below N (argv[1], default 5000000) by trial division: every odd k is
divided by 3, 5, 7, ... up to sqrt(k). Prints "primes below N: COUNT" and exits 0.
At the default N this takes tens of seconds in CPython; pass a smaller N for quick runs.
"""

import sys


def is_prime(k: int) -> bool:
    if k < 2:
        return False
    if k % 2 == 0:
        return k == 2
    d = 3
    while d * d <= k:
        if k % d == 0:
            return False
        d += 2
    return True


def main(argv: list[str]) -> int:
    n = 5_000_000
    if len(argv) > 1:
        try:
            n = int(argv[1])
        except ValueError:
            n = -1
        if not 0 <= n <= 4_000_000_000:
            print("usage: primes.py [N]   (N an integer, at most 4000000000)", file=sys.stderr)
            return 2
    count = 0
    for k in range(2, n):
        if is_prime(k):
            count += 1
    print(f"primes below {n}: {count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
