/* Maglev table fill (Eisenbud et al., NSDI 2016) for many tables in one call.
 *
 * A plain shared library, loaded with ctypes by bpf/maglev.py and built at install time
 * (`make native`):  gcc -O2 -shared -fPIC -o .gen/libmaglev.so bpf/maglev_fill.c
 *
 * The fill is the textbook one, so the tables are identical to maglev_table_reference:
 * backends take turns in the order given (name order); each takes the next free slot of
 * its permutation offset, offset + skip, offset + 2 skip, ... (mod m) until all m slots
 * are taken. Offsets and skips are computed by the caller.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAGLEV_OK 0
#define MAGLEV_EINVAL -1 /* bad m, backend count, offset or skip */
#define MAGLEV_ENOMEM -2

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
    uint32_t t, j, maxn = 0;
    uint32_t *cur;
    uint8_t *taken;
    size_t first = 0;

    if (m < 2 || m > (1u << 30))
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
    for (t = 0; t < ntables; t++) {
        const uint32_t n = counts[t];
        const uint32_t *off = offsets + first, *skip = skips + first;
        const uint32_t *id = ids ? ids + first : NULL;
        uint32_t *tab = out + (size_t)t * m;
        uint32_t left = m;

        for (j = 0; j < n; j++) {
            if (off[j] >= m || skip[j] == 0 || skip[j] >= m) {
                free(cur);
                free(taken);
                return MAGLEV_EINVAL;
            }
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
                    if (++probes >= m) { /* m not prime: this permutation misses slots */
                        free(cur);
                        free(taken);
                        return MAGLEV_EINVAL;
                    }
                }
                taken[c] = 1;
                tab[c] = id ? id[j] : j;
                c += s;
                cur[j] = c >= m ? c - m : c;
                if (--left == 0)
                    goto next;
            }
        }
next:
        first += n;
    }
    free(cur);
    free(taken);
    return MAGLEV_OK;
}
