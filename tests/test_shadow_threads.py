"""The shadow-variable code of vzp_shadow.h under contention, without GDB: 16 threads get, allocate and free
variables of 64 shared objects in a region laid out by gdb_nsb.shadow (the tool's side of the layout), then the
region is read back by gdb_nsb.shadow.variables and checked: one variable per (object, id), every count exact,
the live count and the free lists consistent, free_all leaving none of its id."""

import struct
import subprocess

import pytest

import targets as T
from gdb_nsb import shadow

pytestmark = pytest.mark.timeout(180)

PROGRAM = r'''
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "vzp.h"

#define SIZE %(size)d
char __vzp_shadow_region[SIZE] __attribute__((aligned(4096)));
static const unsigned char header[] = {%(header)s};

#define THREADS 16
#define OBJECTS 64
#define ROUNDS 20000
static long objects[OBJECTS];
static long expected[OBJECTS];          /* increments of the id-1 counters */
static long ctor_runs;

static int init(void *obj, void *data, void *arg)
{
    (void)obj;
    ((long *)data)[1] = (long)arg;
    __atomic_add_fetch(&ctor_runs, 1, __ATOMIC_RELAXED);
    return 0;
}

static void *work(void *a)
{
    unsigned s = (unsigned)(long)a * 2654435761u + 1;
    for (int i = 0; i < ROUNDS; i++) {
        s = s * 1103515245u + 12345u;
        int k = (s >> 8) %% OBJECTS, op = (s >> 20) %% 8;
        long *v;
        switch (op) {
        case 0: case 1: case 2: case 3:   /* id 1: counted, never freed */
            v = vzp_shadow_get_or_alloc(&objects[k], 1, 2 * sizeof(long), init, (void *)0x5eed);
            if (!v) abort();
            __atomic_add_fetch(&v[0], 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&expected[k], 1, __ATOMIC_RELAXED);
            break;
        case 4:                            /* id 2: allocated and freed by everyone */
            vzp_shadow_alloc(&objects[k], 2, 24 + (s >> 28) * 40, NULL, NULL);
            break;
        case 5:
            vzp_shadow_free(&objects[k], 2, NULL);
            break;
        case 6:
            v = vzp_shadow_get(&objects[k], 1);
            if (v && v[1] != 0x5eed) abort();   /* a variable is seen only with its constructor's writes */
            break;
        default:
            if ((s >> 4) %% 64 == 0)
                vzp_shadow_free_all(2, NULL);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[THREADS];
    for (unsigned i = 0; i < sizeof header; i++)
        __vzp_shadow_region[i] = header[i];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    if (vzp_shadow_alloc(&objects[0], 1, 8, NULL, NULL) != NULL)
        abort();                           /* alloc of an existing (object, id) returns NULL */
    FILE *f = fopen(argv[1], "wb");
    fwrite(__vzp_shadow_region, 1, SIZE, f);
    fclose(f);
    for (int k = 0; k < OBJECTS; k++)
        printf("%%lu %%ld\n", (unsigned long)((char *)&objects[k] - (char *)0), expected[k]);
    printf("ctor %%ld\n", ctor_runs);
    vzp_shadow_free_all(2, NULL);
    f = fopen(argv[2], "wb");
    fwrite(__vzp_shadow_region, 1, SIZE, f);
    fclose(f);
    return 0;
}
'''


def _read(data):
    return lambda addr, n: data[addr:addr + n]


def test_shadow_variables_from_16_threads(tmp_path):
    lay = shadow.layout(1 << 20, 10)
    src = PROGRAM % {"size": lay.size, "header": ",".join(str(b) for b in lay.header())}
    exe = T.build([("shadow_threads.c", src)], ["-O2", "-g", "-pthread", "-I" + T.INCLUDE], "shadow-threads")
    before, after = tmp_path / "before", tmp_path / "after"
    out = subprocess.run([exe, str(before), str(after)], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()
    expected = dict((int(a), int(n)) for a, n in (line.split() for line in lines[:-1]))
    ctor_runs = int(lines[-1].split()[1])
    data = before.read_bytes()
    h = shadow.read_header(_read(data), 0)
    assert h.valid and h.lock == 0
    found = shadow.variables(_read(data), 0)
    keys = [(v.obj, v.id) for v in found]
    assert len(keys) == len(set(keys)), "two variables for one (object, id)"
    assert h.live == len(found)
    ones = {v.obj: v for v in found if v.id == 1}
    assert set(ones) == {a for a, n in expected.items() if n}
    assert ctor_runs == len(ones)  # get_or_alloc's constructor ran once per object, never for a lost race
    for obj, v in ones.items():
        count, magic = struct.unpack("<qq", data[v.data_addr:v.data_addr + 16])
        assert (count, magic) == (expected[obj], 0x5EED)
    assert all(v.size in (24 + 40 * n for n in range(16)) for v in found if v.id == 2)
    # The free lists hold exactly the blocks that were used and are not live.
    free = 0
    for k in range(shadow.CLASSES):
        off = struct.unpack_from("<Q", data, 56 + 8 * k)[0]
        while off:
            free += 1
            off = struct.unpack_from("<Q", data, off)[0]
    blocks, off = 0, h.heap
    while off < h.top:
        cls = struct.unpack_from("<I", data, off + 24)[0]
        blocks += 1
        off += shadow.BLOCK_HEADER + (16 << cls)
    assert off == h.top and blocks == free + len(found)
    rest = shadow.variables(_read(after.read_bytes()), 0)
    assert {(v.obj, v.id) for v in rest} == {(o, 1) for o in ones}
