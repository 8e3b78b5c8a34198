/* Service lookup and backend choice: Maglev slot (or random), session affinity. */
#ifndef RR_LIB_LB_H
#define RR_LIB_LB_H

static __always_inline __u32 rr_rotl(__u32 x, int r)
{
    return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 rr_mix(__u32 h, __u32 k)
{
    k *= 0xcc9e2d51;
    k = rr_rotl(k, 15);
    k *= 0x1b873593;
    h ^= k;
    h = rr_rotl(h, 13);
    return h * 5 + 0xe6546b64;
}

static __always_inline __u32 rr_hash_tuple(struct rr_ct_key *t)
{
    __u32 h = 0x9747b28c;

    h = rr_mix(h, t->saddr.w[0]);
    h = rr_mix(h, t->daddr.w[0]);
    if (t->family == RR_AF_INET6) {
        h = rr_mix(h, t->saddr.w[1] ^ t->saddr.w[2] ^ t->saddr.w[3]);
        h = rr_mix(h, t->daddr.w[1] ^ t->daddr.w[2] ^ t->daddr.w[3]);
    }
    h = rr_mix(h, ((__u32)t->sport << 16) | t->dport);
    h = rr_mix(h, t->proto);
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

/* The rr_vips bucket of an IPv6 /64 given as its two first words (as loaded from the
 * address: bpf/maps.py vip6_hash computes the same). */
static __always_inline __u32 rr_vip6_hash(__u32 w0, __u32 w1)
{
    __u32 h = (w0 * 0x9e3779b1u) ^ (w1 * 0x85ebca77u);

    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h & ((1u << RR_VIP6_BITS) - 1);
}

/* May a (destination) address be a service address? 0 only when the filter is armed and
 * its bit (IPv4 /24, IPv6 /64 bucket) was never set: inline array reads, no helper call. */
static __always_inline int rr_vip_maybe(const struct rr_addr *addr, __u8 family)
{
    __u32 word, bit, armed = RR_VIPS_ARMED;
    __u64 *w, *a;

    if (family == RR_AF_INET) {
        __u32 h = __builtin_bswap32(addr->w[0]);

        word = h >> 14;
        bit = (h >> 8) & 63;
    } else {
        __u32 h = rr_vip6_hash(addr->w[0], addr->w[1]);

        word = RR_VIP6_BASE + (h >> 6);
        bit = h & 63;
    }
    w = rr_vips.lookup(&word);
    if (w && ((*w >> bit) & 1))
        return 1;
    a = rr_vips.lookup(&armed);
    return !a || !*a;
}

static __always_inline struct rr_svc_value *rr_svc_lookup(struct rr_ct_key *t)
{
    struct rr_svc_key k = {};

    k.vip = t->daddr;
    k.port = t->dport;
    k.proto = t->proto;
    k.family = t->family;
    return rr_svc.lookup(&k);
}

/* May a new flow from saddr use svc? Always, unless the entry lists source ranges
 * (RR_SVC_SRC_RANGES): then only from one of its prefixes (one LPM lookup). */
static __always_inline int rr_src_allowed(const struct rr_svc_value *svc,
                                          const struct rr_addr *saddr, __u8 family)
{
    struct rr_src_key k = {};

    if (!(svc->flags & RR_SVC_SRC_RANGES))
        return 1;
    k.prefixlen = 32 + (family == RR_AF_INET ? 32 : 128);
    k.svc_id = svc->svc_id;
    k.addr = *saddr;
    return rr_src_ranges.lookup(&k) != 0;
}

/* Pick a backend for a new flow. Returns 0 and fills *be / *be_id, or -1. */
static __always_inline int rr_select(struct rr_ct_key *t, struct rr_svc_value *svc,
                                     __u32 hash, struct rr_backend *be, __u32 *be_id)
{
    struct rr_aff_key ak = {};
    struct rr_aff_value av = {};
    struct rr_aff_value *ap;
    struct rr_backend *bp;
    struct rr_maglev *tab;
    __u32 svc_id = svc->svc_id;
    __u32 timeout = svc->affinity_timeout;
    __u64 slot, now = 0;
    __u32 id;

    if (svc->backend_count == 0)
        return -1;
    if (timeout) {
        now = bpf_ktime_get_coarse_ns(); /* affinity times are CLOCK_MONOTONIC ns */
        ak.client = t->saddr;
        ak.svc_id = svc_id;
        ak.family = t->family;
        ap = rr_affinity.lookup(&ak);
        /* signed: a stamp a tick ahead of the coarse clock (the fine clock wrote it
         * before an upgrade) still counts as fresh */
        if (ap && (__s64)(now - ap->seen_ns) < (__s64)timeout * 1000000000LL) {
            id = ap->backend_id;
            bp = rr_backend.lookup(&id);
            if (bp) {
                ap->seen_ns = now;
                *be = *bp;
                *be_id = id;
                return 0;
            }
        }
    }
    if (svc->flags & RR_SVC_RANDOM)
        slot = (__u64)(bpf_get_prandom_u32() % RR_MAGLEV_M);
    else
        slot = (__u64)(hash % RR_MAGLEV_M);
    asm volatile("" : "+r"(slot));
    if (slot >= RR_MAGLEV_M)
        return -1;
    tab = rr_maglev.lookup(&svc_id);
    if (!tab)
        return -1;
    id = tab->backend_ids[slot];
    bp = rr_backend.lookup(&id);
    if (!bp)
        return -1;
    *be = *bp;
    *be_id = id;
    if (timeout) {
        av.backend_id = id;
        av.seen_ns = now;
        rr_affinity.update(&ak, &av);
    }
    return 0;
}

#endif
