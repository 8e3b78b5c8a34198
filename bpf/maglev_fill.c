/* Maglev table fill (Eisenbud et al., NSDI 2016) for many tables in one call.
 *
 * A plain shared library, loaded with ctypes by bpf/maglev.py and built at install time
 * (`make native`):  gcc -O2 -shared -fPIC -o .gen/libmaglev.so bpf/maglev_fill.c
 *
 * The fill is the textbook one, so the tables are identical to maglev_table_reference:
 * backends take turns in name order; each takes the next free slot of its permutation
 * offset, offset + skip, offset + 2 skip, ... (mod m) until all m slots are taken.
 *
 * maglev_fill takes offsets and skips computed by the caller; maglev_fill_names takes
 * the backend names and does everything (order, hashes, fill), which is what the sync
 * uses: the per-backend work of a 10k-service pass stays out of Python.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAGLEV_OK 0
#define MAGLEV_EINVAL -1 /* bad m, backend count, offset, skip or names */
#define MAGLEV_ENOMEM -2

/* 64-bit FNV-1a of salt then s, finished with the murmur3 fmix64 mixer (FNV alone
 * spreads short, similar names poorly in the low bits). bpf/maglev.py has the same
 * function in Python for the fills that do not use this library. */
uint64_t maglev_hash(const uint8_t *salt, size_t slen, const uint8_t *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < slen; i++)
        h = (h ^ salt[i]) * 0x100000001b3ULL;
    for (i = 0; i < len; i++)
        h = (h ^ s[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* One table: n >= 1 backends in turn order. cur (n) and taken (m) are scratch. */
static int fill_one(uint32_t n, uint32_t m, const uint32_t *off, const uint32_t *skip,
                    const uint32_t *id, uint32_t *tab, uint32_t *cur, uint8_t *taken)
{
    uint32_t j, left = m;

    for (j = 0; j < n; j++) {
        if (off[j] >= m || skip[j] == 0 || skip[j] >= m)
            return MAGLEV_EINVAL;
        cur[j] = off[j];
    }
    memset(taken, 0, m);
    for (;;) {
        for (j = 0; j < n; j++) {
            uint32_t c = cur[j];
            const uint32_t s = skip[j];
            uint32_t probes = 0;

            while (taken[c]) {
                c += s;
                if (c >= m)
                    c -= m;
                if (++probes >= m) /* m not prime: this permutation misses slots */
                    return MAGLEV_EINVAL;
            }
            taken[c] = 1;
            tab[c] = id ? id[j] : j;
            c += s;
            cur[j] = c >= m ? c - m : c;
            if (--left == 0)
                return MAGLEV_OK;
        }
    }
}

static int check_m(uint32_t m)
{
    return m < 2 || m > (1u << 30) ? MAGLEV_EINVAL : MAGLEV_OK;
}

/* Fill ntables tables of m slots each.
 *
 * counts[t]  backends in table t (>= 1)
 * offsets, skips, ids: per backend, table after table (sum of counts entries), each
 *            table's backends in the order they take turns; 0 <= offset < m,
 *            1 <= skip < m, m prime (so that every permutation visits every slot)
 * ids        the value stored in a slot taken by that backend; NULL stores the
 *            backend's position within its table (0 .. counts[t]-1)
 * out        ntables * m values, table t at out[t * m]
 *
 * Returns MAGLEV_OK, or a negative MAGLEV_E* code (out is then partly written). */
int maglev_fill(uint32_t ntables, uint32_t m, const uint32_t *counts,
                const uint32_t *offsets, const uint32_t *skips, const uint32_t *ids,
                uint32_t *out)
{
    uint32_t t, maxn = 0;
    uint32_t *cur;
    uint8_t *taken;
    size_t first = 0;
    int ret = MAGLEV_OK;

    if (check_m(m))
        return MAGLEV_EINVAL;
    for (t = 0; t < ntables; t++) {
        if (counts[t] == 0)
            return MAGLEV_EINVAL;
        if (counts[t] > maxn)
            maxn = counts[t];
    }
    cur = malloc((size_t)(maxn ? maxn : 1) * sizeof(*cur));
    taken = malloc(m);
    if (!cur || !taken) {
        free(cur);
        free(taken);
        return MAGLEV_ENOMEM;
    }
    for (t = 0; t < ntables && ret == MAGLEV_OK; t++) {
        ret = fill_one(counts[t], m, offsets + first, skips + first,
                       ids ? ids + first : NULL, out + (size_t)t * m, cur, taken);
        first += counts[t];
    }
    free(cur);
    free(taken);
    return ret;
}

struct named {
    const uint8_t *name;
    size_t len;
    uint32_t id;
};

/* Byte order of the names (UTF-8 byte order is code point order, as Python sorts). */
static int by_name(const void *a, const void *b)
{
    const struct named *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);

    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Like maglev_fill, from names: names holds every backend name of every table, table
 * after table, each name followed by one '\n' (names contain none); ids has one value
 * per name in the same order. Each table's backends take turns in name order, with
 * offset = maglev_hash("offset", name) % m and skip = maglev_hash("skip", name) % (m-1)
 * + 1. Duplicate names within a table are refused (MAGLEV_EINVAL). */
int maglev_fill_names(uint32_t ntables, uint32_t m, const uint32_t *counts,
                      const uint8_t *names, size_t names_len, const uint32_t *ids,
                      uint32_t *out)
{
    static const uint8_t so[] = "offset", ss[] = "skip";
    uint32_t t, j, maxn = 0;
    struct named *nm;
    uint32_t *cur, *off, *skip, *tid;
    uint8_t *taken;
    const uint8_t *p = names, *end = names + names_len;
    size_t first = 0;
    int ret = MAGLEV_OK;

    if (check_m(m))
        return MAGLEV_EINVAL;
    for (t = 0; t < ntables; t++) {
        if (counts[t] == 0)
            return MAGLEV_EINVAL;
        if (counts[t] > maxn)
            maxn = counts[t];
    }
    if (!maxn)
        maxn = 1;
    nm = malloc(maxn * sizeof(*nm));
    cur = malloc(4 * (size_t)maxn * sizeof(*cur));
    taken = malloc(m);
    if (!nm || !cur || !taken) {
        free(nm);
        free(cur);
        free(taken);
        return MAGLEV_ENOMEM;
    }
    off = cur + maxn;
    skip = off + maxn;
    tid = skip + maxn;
    for (t = 0; t < ntables && ret == MAGLEV_OK; t++) {
        const uint32_t n = counts[t];

        for (j = 0; j < n; j++) {
            const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));

            if (!nl) {
                ret = MAGLEV_EINVAL;
                break;
            }
            nm[j].name = p;
            nm[j].len = (size_t)(nl - p);
            nm[j].id = ids[first + j];
            p = nl + 1;
        }
        if (ret)
            break;
        if (n > 1)
            qsort(nm, n, sizeof(*nm), by_name);
        for (j = 0; j < n; j++) {
            if (j && !by_name(&nm[j - 1], &nm[j])) {
                ret = MAGLEV_EINVAL;
                break;
            }
            off[j] = (uint32_t)(maglev_hash(so, sizeof(so) - 1, nm[j].name, nm[j].len) % m);
            skip[j] = (uint32_t)(maglev_hash(ss, sizeof(ss) - 1, nm[j].name, nm[j].len)
                                 % (m - 1) + 1);
            tid[j] = nm[j].id;
        }
        if (ret)
            break;
        ret = fill_one(n, m, off, skip, tid, out + (size_t)t * m, cur, taken);
        first += n;
    }
    free(nm);
    free(cur);
    free(taken);
    return ret;
}
