"""What the benchmark scripts share: bench-table's generated links (link i's
code and target, as bench/src/lib.rs makes them) and a free loopback port."""
import socket

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def code_for(i):
    """bench-table's code for link i."""
    n = i * 2_654_435_761 % 62**7
    out = []
    for _ in range(7):
        out.append(BASE62[n % 62])
        n //= 62
    return "".join(reversed(out))


def target_for(i, short):
    """bench-table's target for link i (`--short-targets` when `short`)."""
    if short:
        return f"https://e.example/{i}"
    return f"https://www.example.com/articles/2026/{i}/a-readable-slug?utm_source=bench"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
