/* Maglev table fill (Eisenbud et al., NSDI 2016) for many tables in one call.
 *
 * A plain shared library, loaded with ctypes by bpf/maglev.py and built at install time
 * (`make native`):  gcc -O2 -shared -fPIC -pthread -o .gen/libmaglev.so bpf/maglev_fill.c
 *
 * The fill is the textbook one, so the tables are identical to maglev_table_reference:
 * backends take turns in name order; each takes the next free slot of its permutation
 * offset, offset + skip, offset + 2 skip, ... (mod m) until all m slots are taken.
 *
 * maglev_fill takes offsets and skips computed by the caller; maglev_fill_names takes
 * the backend names and does everything (order, hashes, fill), which is what the sync
 * uses: the per-backend work of a 10k-service pass stays out of Python.
 *
 * maglev_queue_*: a work queue of maglev_fill_names calls, so that tables are filled on
 * other threads while the caller (the sync's Python loop, holding the GIL) still produces
 * them; a consumer never returns to Python between jobs (see bpf/maglev.py FillQueue). A
 * job either fills a buffer of the caller's, or fills the consumer's own scratch buffer
 * and writes the tables into a BPF map at once (one batched update), so that a large
 * pass never holds all its tables in memory.
 */

#include <errno.h>
#include <linux/bpf.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/* A queue of maglev_fill_names jobs. The caller keeps every buffer of a job alive until
 * maglev_queue_run has returned on every consumer thread. */
struct fill_job {
    struct fill_job *next;
    uint32_t ntables;
    const uint32_t *counts;
    const uint8_t *names;
    size_t names_len;
    const uint32_t *ids;
    int uniform;          /* ids in turn (random choice) instead of Maglev order */
    uint32_t *out;        /* the caller's buffer; NULL: write into the map */
    const uint32_t *keys; /* map keys, one per table (out == NULL) */
    int32_t *errs;        /* per table: 0 written, else its errno (out == NULL) */
};

struct fill_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fill_job *head, *tail;
    uint32_t m;
    int map_fd; /* where jobs without a buffer write (-1: none) */
    int closed;
    int err; /* the first job's error, MAGLEV_OK while none failed */
};

/* A queue for tables of m slots; jobs without a buffer of their own write into the map
 * map_fd (u32 key, m x u32 value), which the caller keeps open until every run returned. */
struct fill_queue *maglev_queue_new(uint32_t m, int map_fd)
{
    struct fill_queue *q;

    if (check_m(m))
        return NULL;
    q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->m = m;
    q->map_fd = map_fd;
    return q;
}

/* Add a job: the arguments of maglev_fill_names after m (uniform: each table holds its
 * ids in turn, ids[0], ids[1], .., ids[0], .., the spread a random choice needs; names
 * are then not read), then either out (the tables land there), or out NULL with keys and
 * errs (the tables are written into the map under keys[t]; errs[t] becomes 0 or the
 * errno that refused table t; the others are still written). MAGLEV_EINVAL once closed,
 * or for a map job on a queue with no map. */
int maglev_queue_push(struct fill_queue *q, uint32_t ntables, const uint32_t *counts,
                      const uint8_t *names, size_t names_len, const uint32_t *ids,
                      int uniform, uint32_t *out, const uint32_t *keys, int32_t *errs)
{
    struct fill_job *j;
    int ret = MAGLEV_OK;

    if (!out && (q->map_fd < 0 || !keys || !errs))
        return MAGLEV_EINVAL;
    j = malloc(sizeof(*j));
    if (!j)
        return MAGLEV_ENOMEM;
    j->next = NULL;
    j->ntables = ntables;
    j->counts = counts;
    j->names = names;
    j->names_len = names_len;
    j->ids = ids;
    j->uniform = uniform;
    j->out = out;
    j->keys = keys;
    j->errs = errs;
    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        ret = MAGLEV_EINVAL;
        free(j);
    } else {
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return ret;
}

/* No more jobs: consumers return once the queue is empty. */
void maglev_queue_close(struct fill_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* ntables tables of m slots, each its counts[t] ids in turn. */
static int fill_uniform(uint32_t ntables, uint32_t m, const uint32_t *counts,
                        const uint32_t *ids, uint32_t *out)
{
    uint32_t t, c, j;

    for (t = 0; t < ntables; t++) {
        if (counts[t] == 0)
            return MAGLEV_EINVAL;
        for (c = 0, j = 0; c < m; c++) {
            out[c] = ids[j];
            if (++j == counts[t])
                j = 0;
        }
        ids += counts[t];
        out += m;
    }
    return MAGLEV_OK;
}

static int fill_job(const struct fill_job *j, uint32_t m, uint32_t *out)
{
    if (j->uniform)
        return fill_uniform(j->ntables, m, j->counts, j->ids, out);
    return maglev_fill_names(j->ntables, m, j->counts, j->names, j->names_len, j->ids, out);
}

/* Write n tables (keys[t] -> vals + t * m) with batched updates; a table the kernel
 * refuses gets its errno in errs[t], and the ones after it are still written. */
static void write_tables(int fd, uint32_t m, uint32_t n, const uint32_t *keys,
                         const uint32_t *vals, int32_t *errs)
{
    uint32_t lo = 0;

    memset(errs, 0, n * sizeof(*errs));
    while (lo < n) {
        union bpf_attr attr;
        long ret;

        memset(&attr, 0, sizeof(attr));
        attr.batch.keys = (uint64_t)(uintptr_t)(keys + lo);
        attr.batch.values = (uint64_t)(uintptr_t)(vals + (size_t)lo * m);
        attr.batch.count = n - lo;
        attr.batch.map_fd = (uint32_t)fd;
        ret = syscall(__NR_bpf, BPF_MAP_UPDATE_BATCH, &attr, sizeof(attr));
        if (ret == 0)
            return;
        if (attr.batch.count >= n - lo) /* refused, yet says all done: blame the last */
            attr.batch.count = n - lo - 1;
        lo += attr.batch.count;
        errs[lo] = errno ? errno : EIO;
        lo++;
    }
}

/* Consume jobs until the queue is closed and empty (any number of threads may); returns
 * the first error of any job's fill (MAGLEV_OK if none; a refused map write is reported
 * in its job's errs, not here). */
int maglev_queue_run(struct fill_queue *q)
{
    struct fill_job *j;
    uint32_t *scratch = NULL;
    size_t have = 0;
    int ret;

    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->closed)
            pthread_cond_wait(&q->cv, &q->mu);
        j = q->head;
        if (j) {
            q->head = j->next;
            if (!q->head)
                q->tail = NULL;
        }
        pthread_mutex_unlock(&q->mu);
        if (!j)
            break;
        if (j->out) {
            ret = fill_job(j, q->m, j->out);
        } else {
            size_t need = (size_t)j->ntables * q->m;

            ret = MAGLEV_OK;
            if (need > have) {
                free(scratch);
                scratch = malloc(need * sizeof(*scratch));
                have = scratch ? need : 0;
                if (!scratch)
                    ret = MAGLEV_ENOMEM;
            }
            if (ret == MAGLEV_OK)
                ret = fill_job(j, q->m, scratch);
            if (ret == MAGLEV_OK && j->ntables)
                write_tables(q->map_fd, q->m, j->ntables, j->keys, scratch, j->errs);
        }
        free(j);
        if (ret) {
            pthread_mutex_lock(&q->mu);
            if (!q->err)
                q->err = ret;
            pthread_mutex_unlock(&q->mu);
        }
    }
    free(scratch);
    pthread_mutex_lock(&q->mu);
    ret = q->err;
    pthread_mutex_unlock(&q->mu);
    return ret;
}

/* Free a queue nobody runs any more (jobs still queued are dropped). */
void maglev_queue_free(struct fill_queue *q)
{
    struct fill_job *j = q->head, *n;

    for (; j; j = n) {
        n = j->next;
        free(j);
    }
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}
