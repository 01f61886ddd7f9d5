"""Java-compatible Kafka key partitioning.

Records for one asset must land in the same partition whether a Java client,
ksqlDB or we wrote them; that choice is made by Kafka's murmur2 hash. This
module reproduces it in pure Python so the extension (and its tests) can tell
in advance which partition a key belongs to, e.g. to assign a consumer to
exactly the partition that carries its own commands.
"""

from __future__ import annotations

__all__ = ["murmur2", "partition_for_key"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Hash ``data`` exactly like Java Kafka's ``Utils.murmur2``.

    The result is a *signed* 32-bit int because Java's ``int`` is signed and
    published test vectors (and ``Utils.toPositive``) are expressed that way.
    Arithmetic is done on unsigned 32-bit values (masking after every
    multiply) and Java's ``>>>`` is a plain shift on those; only the final
    value is reinterpreted as signed.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"murmur2 needs bytes, got {type(data).__name__}")
    buf = bytes(data)
    length = len(buf)
    h = (_SEED ^ length) & _MASK32

    whole = length - (length % 4)
    for i in range(0, whole, 4):
        # Java reads each 4-byte block little-endian.
        k = int.from_bytes(buf[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> _R
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k

    # Tail: the 1..3 bytes left over are folded in, highest index first,
    # which is what Java's fall-through switch does.
    rest = length % 4
    if rest == 3:
        h ^= buf[whole + 2] << 16
    if rest >= 2:
        h ^= buf[whole + 1] << 8
    if rest >= 1:
        h ^= buf[whole]
        h = (h * _M) & _MASK32

    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15

    return h - 0x1_0000_0000 if h & 0x8000_0000 else h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Partition a non-null key the way librdkafka's ``murmur2_random`` does.

    That is Java's default partitioner for keyed records:
    ``toPositive(murmur2(key)) % numPartitions``, where ``toPositive`` clears
    the sign bit (it is not ``abs``).
    """
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int):
        raise TypeError("num_partitions must be an int")
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions
