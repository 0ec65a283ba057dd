"""Fuzzing the decoders that read untrusted bytes, shared by ``tools/fuzz`` (randomized, seed printed)
and ``tests/test_fuzz.py`` (the fixed regression corpus in ``tests/fuzz_corpus``).

Targets: the vzpatch section (``LivePatch.from_bytes``), the ELF reader (``ElfImage`` and everything
it decodes lazily) and the registry (``registry_slots.decode``: format 2 and, through it, format 1's
``Registry.decode``).  Every input must decode or raise the module's typed one-line NsbError;
anything else (IndexError, struct.error, MemoryError, a multi-line message) is a failure.

Corpus files: ``fuzz_corpus/TARGET/NAME.bin`` (ELF files gzip-compressed: ``NAME.bin.gz``).
"""

import gzip
import hashlib
import os
import random
import struct
import tempfile
import zlib

from gdb_nsb import errors, registry_slots as slots
from gdb_nsb.elf import sections
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.registry import HEADER_SIZE, FunctionRecord, MappedRange, PatchRecord, Registry

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_corpus")
TARGETS = ("vzpatch", "elf", "registry")
EDGES = (b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\xff\xff\xff\xff\x0f",
         struct.pack("<Q", 1 << 63))


def seed_registry():
    """A committed format-2 registry mapping (two patches, two layers), and a format-1 one."""
    reg = Registry([PatchRecord("ab" * 20, "cd" * 20, "target", 0x555555554000, 0x7f0000000000,
                                [MappedRange(0x7f0000000000, 0x2000, 5), MappedRange(0x7f0000002000, 0x1000, 1)],
                                "/tmp/p.so", "active",
                                [FunctionRecord("compute", 0x555555555130, b"\xe9\x01\x02\x03\x04",
                                                b"\x8b\x05\x00\x00\x00", ""),
                                 FunctionRecord("scale", 0x555555555140, b"\xe9\x11\x12\x13\x14",
                                                b"\x8d\x04\x3f\x03\x05", "")])], generation=3)
    payload = reg.encode_payload()
    size = slots.mapping_size_for(len(payload))
    slot_size = slots.slot_size_for(size)
    data = bytearray(size)
    data[:slots.SUPER_SIZE] = slots.superblock(slot_size, 3, seq=1)
    at = slots.slot_offset(1, slot_size)
    body = slots.slot_bytes(payload, 1, 3)
    data[at:at + len(body)] = body
    return bytes(data), reg.encode()


def seeds(patch_path):
    """{target: [seed bytes]} from a valid patch file."""
    with open(patch_path, "rb") as f:
        elf = f.read()
    return {"vzpatch": [sections.read_section(patch_path, "vzpatch")], "elf": [elf], "registry": list(seed_registry())}


def mutate(data, rng):
    """1-8 mutations: bit flips, edge values, cuts, insertions, deletions, duplications."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not data:
            data += rng.randbytes(rng.randint(1, 64))
            continue
        op = rng.choice(("flip", "edge", "cut", "insert", "delete", "dup"))
        # Half the damage where readers look first (headers), half anywhere.
        at = rng.randrange(min(len(data), 256)) if rng.random() < 0.5 else rng.randrange(len(data))
        if op == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif op == "edge":
            v = rng.choice(EDGES)
            data[at:at + len(v)] = v
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 32))
        elif op == "delete":
            del data[at:at + rng.randint(1, 64)]
        else:
            n = rng.randint(1, 64)
            data[at:at] = data[at:at + n]
    return bytes(data)


def fix_crcs(blob):
    """Recompute the CRCs a registry blob claims, so that mutations reach the payload parser."""
    blob = bytearray(blob)
    if len(blob) >= slots.SUPER_SIZE and struct.unpack_from("<I", blob, 8)[0] == 1 and len(blob) >= HEADER_SIZE:
        magic, version, length, crc, reserved, gen = struct.unpack_from("<8sIIIIQ", blob)
        length = min(length, len(blob) - HEADER_SIZE)
        zeroed = struct.pack("<8sIIIIQ", magic, version, length, 0, reserved, gen)
        crc = zlib.crc32(zeroed + bytes(blob[HEADER_SIZE:HEADER_SIZE + length])) & 0xFFFFFFFF
        struct.pack_into("<8sIIIIQ", blob, 0, magic, version, length, crc, reserved, gen)
    elif len(blob) >= slots.SUPER_SIZE:
        slot_size = struct.unpack_from("<I", blob, 12)[0]
        for i in (0, 1):
            at = slots.SUPER_SIZE + i * slot_size
            if slot_size and at + slots.SLOT_HEADER <= len(blob):
                _, length, seq, gen, res = struct.unpack_from("<IIQQQ", blob, at)
                payload = bytes(blob[at + slots.SLOT_HEADER:at + slots.SLOT_HEADER + length])
                crc = zlib.crc32(struct.pack("<IIQQQ", 0, length, seq, gen, res) + payload) & 0xFFFFFFFF
                struct.pack_into("<I", blob, at, crc)
    return bytes(blob)


def _decode_vzpatch(blob):
    LivePatch.from_bytes(blob).to_bytes()


def _decode_elf(blob):
    fd, path = tempfile.mkstemp(suffix=".so", prefix="nsb-fuzz-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        img = ElfImage(path)
        for attr in ("segments", "sections", "build_id", "dynamic", "needed", "dynsyms", "symtab",
                     "version_needs", "relocations"):
            getattr(img, attr)
        img.load_span()
        img.section_data("vzpatch")
        LivePatch.read(path)
    finally:
        os.unlink(path)


def _decode_registry(blob):
    def read(off, n):
        if off < 0 or off + n > len(blob):
            raise errors.RegistryCorrupt("read beyond the mapping")  # the process would refuse the same
        return blob[off:off + n]
    found = slots.decode(read, len(blob), "fuzzed registry")
    reg = found.registry
    if reg is not None:
        for e in reg.entries():
            reg.stack(e)
        reg.encode_payload()


DECODERS = {"vzpatch": _decode_vzpatch, "elf": _decode_elf, "registry": _decode_registry}


def check(target, blob):
    """None when ``blob`` decodes or is refused cleanly; otherwise the failure as one string."""
    try:
        DECODERS[target](blob)
    except errors.NsbError as e:
        text = str(e)
        if not text or "\n" in text:
            return "%s with a message that is not one line: %r" % (type(e).__name__, text)
        return None
    except Exception as e:  # noqa: BLE001 - the fuzzer's verdict: any other exception is the bug it reports
        return "%s: %s" % (type(e).__name__, e)
    return None


def corpus_path(target, blob):
    name = hashlib.sha1(blob).hexdigest()[:16]
    return os.path.join(CORPUS, target, name + (".bin.gz" if target == "elf" else ".bin"))


def save(target, blob):
    path = corpus_path(target, blob)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = gzip.compress(blob, mtime=0) if path.endswith(".gz") else blob
    with open(path, "wb") as f:
        f.write(data)
    return path


def corpus(target):
    """[(file name, bytes)] of the regression corpus for ``target``."""
    d = os.path.join(CORPUS, target)
    out = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        out.append((name, gzip.decompress(data) if name.endswith(".gz") else data))
    return out


def run(seed, count, targets, seed_blobs, keep=0, log=print):
    """``count`` random inputs per target from ``seed``; failures saved to the corpus. Returns failures.

    ``keep``: also save the first ``keep`` cleanly refused inputs per target (to grow the corpus)."""
    failures = []
    for target in targets:
        rng = random.Random("%d/%s" % (seed, target))
        kept = 0
        for i in range(count):
            base = rng.choice(seed_blobs[target])
            mutated = target != "vzpatch" or rng.random() < 0.8
            blob = mutate(base, rng) if mutated else rng.randbytes(rng.randint(0, 512))
            if target == "registry" and rng.random() < 0.5:
                blob = fix_crcs(blob)
            failure = check(target, blob)
            if failure is not None:
                path = save(target, blob)
                failures.append((target, i, failure, path))
                log("FAIL %s #%d: %s (saved %s)" % (target, i, failure, os.path.relpath(path)))
            elif kept < keep and blob not in seed_blobs[target]:
                save(target, blob)
                kept += 1
        log("fuzz %s: %d inputs from seed %d, %d failures" % (target, count, seed,
                                                             sum(1 for f in failures if f[0] == target)))
    return failures
