/*
 * vzp_shadow.h - shadow variables for gdb-nsb live patches (included by vzp.h).
 *
 * A patch may not define writable data, and it cannot grow the target's
 * structs.  A shadow variable is new data attached to an existing object: a
 * block of memory found again by (object address, id), as the Linux kernel's
 * klp_shadow_* (Documentation/livepatch/shadow-vars.rst):
 *
 *   void *vzp_shadow_get(void *obj, unsigned long id);
 *   void *vzp_shadow_alloc(void *obj, unsigned long id, size_t size,
 *                          vzp_shadow_ctor_t ctor, void *ctor_data);
 *   void *vzp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size,
 *                                 vzp_shadow_ctor_t ctor, void *ctor_data);
 *   void vzp_shadow_free(void *obj, unsigned long id, vzp_shadow_dtor_t dtor);
 *   void vzp_shadow_free_all(unsigned long id, vzp_shadow_dtor_t dtor);
 *
 * alloc returns NULL when (obj, id) exists already or the region is full;
 * get_or_alloc returns the existing variable or a new one.  New data is
 * zero-filled, then ctor (if any) runs; a non-zero ctor return frees it and
 * returns NULL.  free / free_all call dtor (if any) before freeing.
 *
 * Where the data lives: a region of the process (memfd "nsb-shadow", mapped
 * once per process by gdb-nsb, MAP_PRIVATE so a forked child gets a copy),
 * outside every patch.  It survives reverts and replaces: a patch frees its
 * variables only when it says so (free_all in its post-unpatch callback, as
 * in the kernel).  The patch reaches it through the symbol
 * __vzp_shadow_region, which gdb-nsb binds to the region when it applies the
 * patch.  Layout: gdb_nsb/shadow.py (the tool's side of the same layout).
 *
 * Threads and memory ordering: every call takes the region's lock (a spin
 * lock: acquire on entry, release on exit), so calls from any number of
 * threads are linearizable, and everything a ctor wrote happens-before the
 * return of any get / get_or_alloc that returns that variable in another
 * thread.  Writes through the returned pointer afterwards are the patch's to
 * order (atomics or its own lock), as for any shared memory.  The pointer
 * stays valid until the variable is freed: freeing one another thread still
 * uses is the caller's bug, as in the kernel.  ctor and dtor run under the
 * lock: they must not call vzp_shadow_* (that would deadlock) and should be
 * short.  Not async-signal-safe: never call these from a signal handler.
 */
#ifndef VZP_SHADOW_H
#define VZP_SHADOW_H

#include <stddef.h>

typedef int (*vzp_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*vzp_shadow_dtor_t)(void *obj, void *shadow_data);

/* Bound by gdb-nsb to the process's shadow region (never defined by a patch). */
extern char __vzp_shadow_region[];

#define VZP_SHADOW_MAGIC 0x3157444853425350ULL /* "PSBSHDW1" */
#define VZP_SHADOW_CLASSES 24                  /* block classes: 16 << k data bytes */

struct vzp__shadow_header {
    unsigned long long magic;
    unsigned long long size;       /* region bytes */
    unsigned int lock;             /* 0 free, 1 held */
    unsigned int bucket_bits;      /* the table has 1 << bucket_bits buckets */
    unsigned long long buckets;    /* offset of the bucket table (u64 offsets, 0 = empty) */
    unsigned long long heap;       /* offset of the first block */
    unsigned long long top;        /* offset of the first never-used byte */
    unsigned long long live;       /* variables allocated now */
    unsigned long long free_lists[VZP_SHADOW_CLASSES]; /* offset of a free block per class */
};

struct vzp__shadow_block {
    unsigned long long next;       /* offset: next in its bucket, or in its free list */
    unsigned long long obj;
    unsigned long long id;
    unsigned int cls;
    unsigned int size;             /* bytes asked for */
    /* data follows, 16-byte aligned */
};

static inline struct vzp__shadow_header *vzp__shadow(void)
{
    return (struct vzp__shadow_header *)__vzp_shadow_region;
}

static inline struct vzp__shadow_block *vzp__block(struct vzp__shadow_header *h, unsigned long long off)
{
    return off ? (struct vzp__shadow_block *)((char *)h + off) : (struct vzp__shadow_block *)0;
}

static inline void vzp__shadow_lock(struct vzp__shadow_header *h)
{
    unsigned spins = 0;
    while (__atomic_exchange_n(&h->lock, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&h->lock, __ATOMIC_RELAXED)) {
            if (++spins < 128) {
                __builtin_ia32_pause();
            } else {
                long r; /* sched_yield, without libc */
                __asm__ volatile("syscall" : "=a"(r) : "0"(24L) : "rcx", "r11", "memory");
                spins = 0;
            }
        }
    }
}

static inline void vzp__shadow_unlock(struct vzp__shadow_header *h)
{
    __atomic_store_n(&h->lock, 0, __ATOMIC_RELEASE);
}

static inline unsigned long long *vzp__bucket(struct vzp__shadow_header *h, void *obj, unsigned long id)
{
    unsigned long long k = (unsigned long long)obj * 0x9E3779B97F4A7C15ULL ^
                           ((unsigned long long)id + 1) * 0xC2B2AE3D27D4EB4FULL;
    k ^= k >> 29;
    k *= 0xBF58476D1CE4E5B9ULL;
    return (unsigned long long *)((char *)h + h->buckets) + (k >> (64 - h->bucket_bits));
}

static inline void *vzp__data(struct vzp__shadow_block *b)
{
    return (char *)b + sizeof(struct vzp__shadow_block);
}

static inline struct vzp__shadow_block *vzp__find(struct vzp__shadow_header *h, void *obj, unsigned long id)
{
    struct vzp__shadow_block *b;
    for (b = vzp__block(h, *vzp__bucket(h, obj, id)); b; b = vzp__block(h, b->next))
        if (b->obj == (unsigned long long)obj && b->id == id)
            return b;
    return 0;
}

static inline void vzp__release(struct vzp__shadow_header *h, struct vzp__shadow_block *b)
{
    b->next = h->free_lists[b->cls];
    b->obj = 0;
    b->id = 0;
    h->free_lists[b->cls] = (unsigned long long)((char *)b - (char *)h);
    h->live--;
}

/* Unlink the block that `link` points to, then free it (lock held). */
static inline void vzp__unlink(struct vzp__shadow_header *h, unsigned long long *link, vzp_shadow_dtor_t dtor)
{
    struct vzp__shadow_block *b = vzp__block(h, *link);
    *link = b->next;
    if (dtor)
        dtor((void *)b->obj, vzp__data(b));
    vzp__release(h, b);
}

/* A zeroed block of class fitting `size`, or 0 when the region is full (lock held). */
static inline struct vzp__shadow_block *vzp__take(struct vzp__shadow_header *h, size_t size)
{
    unsigned cls = 0;
    unsigned long long bytes, off;
    struct vzp__shadow_block *b;
    unsigned long long *p, *end;
    while (cls < VZP_SHADOW_CLASSES && (16ULL << cls) < size)
        cls++;
    if (cls == VZP_SHADOW_CLASSES)
        return 0;
    bytes = sizeof(struct vzp__shadow_block) + (16ULL << cls);
    off = h->free_lists[cls];
    if (off) {
        b = vzp__block(h, off);
        h->free_lists[cls] = b->next;
    } else {
        if (h->top + bytes > h->size)
            return 0;
        off = h->top;
        h->top += bytes;
        b = vzp__block(h, off);
    }
    for (p = (unsigned long long *)b, end = (unsigned long long *)((char *)b + bytes); p < end; p++)
        *p = 0;
    b->cls = cls;
    b->size = (unsigned int)size;
    h->live++;
    return b;
}

static inline void *vzp__alloc_locked(struct vzp__shadow_header *h, void *obj, unsigned long id, size_t size,
                                      vzp_shadow_ctor_t ctor, void *ctor_data)
{
    unsigned long long *bucket = vzp__bucket(h, obj, id);
    struct vzp__shadow_block *b = vzp__take(h, size);
    if (!b)
        return 0;
    b->obj = (unsigned long long)obj;
    b->id = id;
    if (ctor && ctor(obj, vzp__data(b), ctor_data)) {
        vzp__release(h, b);
        return 0;
    }
    b->next = *bucket;
    *bucket = (unsigned long long)((char *)b - (char *)h);
    return vzp__data(b);
}

static inline void *vzp_shadow_get(void *obj, unsigned long id)
{
    struct vzp__shadow_header *h = vzp__shadow();
    struct vzp__shadow_block *b;
    if (h->magic != VZP_SHADOW_MAGIC)
        return 0;
    vzp__shadow_lock(h);
    b = vzp__find(h, obj, id);
    vzp__shadow_unlock(h);
    return b ? vzp__data(b) : 0;
}

static inline void *vzp_shadow_alloc(void *obj, unsigned long id, size_t size, vzp_shadow_ctor_t ctor,
                                     void *ctor_data)
{
    struct vzp__shadow_header *h = vzp__shadow();
    void *data = 0;
    if (h->magic != VZP_SHADOW_MAGIC)
        return 0;
    vzp__shadow_lock(h);
    if (!vzp__find(h, obj, id))
        data = vzp__alloc_locked(h, obj, id, size, ctor, ctor_data);
    vzp__shadow_unlock(h);
    return data;
}

static inline void *vzp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, vzp_shadow_ctor_t ctor,
                                            void *ctor_data)
{
    struct vzp__shadow_header *h = vzp__shadow();
    struct vzp__shadow_block *b;
    void *data;
    if (h->magic != VZP_SHADOW_MAGIC)
        return 0;
    vzp__shadow_lock(h);
    b = vzp__find(h, obj, id);
    data = b ? vzp__data(b) : vzp__alloc_locked(h, obj, id, size, ctor, ctor_data);
    vzp__shadow_unlock(h);
    return data;
}

static inline void vzp_shadow_free(void *obj, unsigned long id, vzp_shadow_dtor_t dtor)
{
    struct vzp__shadow_header *h = vzp__shadow();
    unsigned long long *link;
    if (h->magic != VZP_SHADOW_MAGIC)
        return;
    vzp__shadow_lock(h);
    for (link = vzp__bucket(h, obj, id); *link; link = &vzp__block(h, *link)->next) {
        struct vzp__shadow_block *b = vzp__block(h, *link);
        if (b->obj == (unsigned long long)obj && b->id == id) {
            vzp__unlink(h, link, dtor);
            break;
        }
    }
    vzp__shadow_unlock(h);
}

static inline void vzp_shadow_free_all(unsigned long id, vzp_shadow_dtor_t dtor)
{
    struct vzp__shadow_header *h = vzp__shadow();
    unsigned long long i, *link;
    if (h->magic != VZP_SHADOW_MAGIC)
        return;
    vzp__shadow_lock(h);
    for (i = 0; i < (1ULL << h->bucket_bits); i++) {
        link = (unsigned long long *)((char *)h + h->buckets) + i;
        while (*link) {
            if (vzp__block(h, *link)->id == id)
                vzp__unlink(h, link, dtor);
            else
                link = &vzp__block(h, *link)->next;
        }
    }
    vzp__shadow_unlock(h);
}

#endif /* VZP_SHADOW_H */
