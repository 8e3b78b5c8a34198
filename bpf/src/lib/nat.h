/* Conntrack-backed DNAT/SNAT and reverse NAT shared by the TC programs. */
#ifndef RR_LIB_NAT_H
#define RR_LIB_NAT_H

#define RR_NAT_PASS 0    /* not ours: let the packet go */
#define RR_NAT_DONE 1    /* rewritten, let the kernel route it */
#define RR_NAT_SNAT 2    /* rewritten with SNAT: send it out of the uplink ourselves */
#define RR_NAT_HAIRPIN 3 /* rewritten, for the pod it came from: send it back in */
#define RR_NAT_DROP (-1) /* refuse */

#define RR_SNAT_TRIES 8

/* A conntrack entry's translation, copied out of the map value (IPv4 in w[0]). */
struct rr_ct_info {
    struct rr_addr addr;
    struct rr_addr nat_addr;
    __be16 port;
    __be16 nat_port;
    __u16 flags;
    __u32 backend_id;
};

static __always_inline void rr_ct4_key_of(struct rr_ct4_key *k, const struct rr_ct_key *t,
                                          __u8 dir)
{
    k->saddr = t->saddr.w[0];
    k->daddr = t->daddr.w[0];
    k->sport = t->sport;
    k->dport = t->dport;
    k->proto = t->proto;
    k->dir = dir;
    k->pad = 0;
}

/* The service loopback address of family, into a: the source a pod that reaches itself
 * through a service is given (a packet from its own address would be refused by its
 * kernel), as Cilium's ipv4-service-loopback-address. */
static __always_inline void rr_loopback(struct rr_addr *a, __u8 family)
{
    if (family == RR_AF_INET) {
        a->w[0] = RR_LOOPBACK4;
        a->w[1] = a->w[2] = a->w[3] = 0;
    } else {
        a->w[0] = RR_LOOPBACK6_0;
        a->w[1] = RR_LOOPBACK6_1;
        a->w[2] = RR_LOOPBACK6_2;
        a->w[3] = RR_LOOPBACK6_3;
    }
}

static __always_inline int rr_is_loopback(const struct rr_addr *a, __u8 family)
{
    if (family == RR_AF_INET)
        return a->w[0] == RR_LOOPBACK4;
    return a->w[0] == RR_LOOPBACK6_0 && a->w[1] == RR_LOOPBACK6_1 &&
           a->w[2] == RR_LOOPBACK6_2 && a->w[3] == RR_LOOPBACK6_3;
}

/* How long entry flags of a flow of proto may stay idle, in jiffies. */
static __always_inline __u32 rr_ct_lifetime(__u8 proto, __u16 flags)
{
    if (proto != IPPROTO_TCP)
        return RR_CT_UDP_LIFETIME * RR_HZ;
    if (flags & RR_CT_CLOSING)
        return RR_CT_CLOSE_LIFETIME * RR_HZ;
    return RR_CT_TCP_LIFETIME * RR_HZ;
}

/* An entry v of p's flow is used: 0 if it outlived its lifetime (a miss), else 1, with
 * seen moved on when it is RR_CT_SEEN_JIFFIES old. */
#define RR_CT_TOUCH(v, p)                                                \
    ({                                                                   \
        __u32 j_ = (__u32)bpf_jiffies64();                               \
        __u32 idle_ = j_ - (v)->seen;                                    \
        int live_ = idle_ <= rr_ct_lifetime((p)->t.proto, (v)->flags);   \
        if (live_ && idle_ >= RR_CT_SEEN_JIFFIES)                        \
            (v)->seen = j_;                                              \
        live_;                                                           \
    })

/* The fields both families' conntrack values share with struct rr_ct_info (the two
 * value structs differ only in their address width): a value's into ci, and ci's (plus
 * ids and times) into a new value. */
#define RR_CT_INFO_PORTS(ci, v)               \
    do {                                      \
        (ci)->port = (v)->port;               \
        (ci)->nat_port = (v)->nat_port;       \
        (ci)->flags = (v)->flags;             \
        (ci)->backend_id = (v)->backend_id;   \
    } while (0)

#define RR_CT_VALUE_REST(v, ci, sid, bid, now) \
    do {                                       \
        (v)->port = (ci)->port;                \
        (v)->nat_port = (ci)->nat_port;        \
        (v)->svc_id = (sid);                   \
        (v)->backend_id = (bid);               \
        (v)->flags = (ci)->flags;              \
        (v)->created = (now);                  \
        (v)->seen = (now);                     \
    } while (0)

/* The rr_replies bucket of a reply source: its address (words as loaded), port (network
 * order, as loaded) and protocol. bpf/maps.py reply_hash computes the same. */
static __always_inline __u32 rr_reply_hash(const struct rr_addr *a, __u8 family,
                                           __be16 port, __u8 proto)
{
    __u32 h = a->w[0] * 0x9e3779b1u;

    if (family != RR_AF_INET)
        h ^= (a->w[1] * 0x85ebca77u) ^ (a->w[2] * 0xc2b2ae3du) ^ (a->w[3] * 0x27d4eb2fu);
    h ^= (((__u32)port << 8) | proto) * 0x165667b1u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h & ((1u << RR_REPLY_BITS) - 1);
}

/* A reply entry is about to be made under rk: set its source's bit (atomically: another
 * CPU may be setting another bit of the word), unless it is set already. */
static __always_inline void rr_reply_mark(const struct rr_ct_key *rk)
{
    __u32 h = rr_reply_hash(&rk->saddr, rk->family, rk->sport, rk->proto);
    __u32 word = h >> 6;
    __u64 bit = 1ull << (h & 63), *w;

    w = rr_replies.lookup(&word);
    if (w && !(*w & bit))
        __sync_fetch_and_or(w, bit);
}

/* May p be the reply of a translated flow? 0 only when the filter is armed and the bit
 * of p's source was never set: inline array reads, no helper call. */
static __always_inline int rr_reply_maybe(const struct rr_pkt *p)
{
    __u32 h = rr_reply_hash(&p->t.saddr, p->t.family, p->t.sport, p->t.proto);
    __u32 word = h >> 6, armed = RR_REPLIES_ARMED;
    __u64 *w, *a;

    w = rr_replies.lookup(&word);
    if (w && ((*w >> (h & 63)) & 1))
        return 1;
    a = rr_replies.lookup(&armed);
    return !a || !*a;
}

/* The other entry of the flow whose entry ci is: (addr:port -> nat_addr:nat_port) in
 * the other direction, for the forward entry (backend -> client or SNAT source) and for
 * the reply entry (client -> service) alike. */
static __always_inline void rr_ct_twin(struct rr_ct_key *k, const struct rr_pkt *p, __u8 dir,
                                       const struct rr_ct_info *ci)
{
    k->saddr = ci->addr;
    k->daddr = ci->nat_addr;
    k->sport = ci->port;
    k->dport = ci->nat_port;
    k->proto = p->t.proto;
    k->family = p->t.family;
    k->dir = dir == RR_DIR_FORWARD ? RR_DIR_REPLY : RR_DIR_FORWARD;
    k->pad = 0;
}

/* Is the forward entry of the flow whose reply entry is ci alive? */
static __always_inline int rr_ct_twin_live(const struct rr_pkt *p, const struct rr_ct_info *ci)
{
    struct rr_ct_key k;
    __u32 now = (__u32)bpf_jiffies64();

    rr_ct_twin(&k, p, RR_DIR_REPLY, ci);
    if (k.family == RR_AF_INET) {
        struct rr_ct4_key k4;
        struct rr_ct4_value *v;

        rr_ct4_key_of(&k4, &k, RR_DIR_FORWARD);
        v = rr_ct.lookup(&k4);
        return v && now - v->seen <= rr_ct_lifetime(k.proto, v->flags);
    } else {
        struct rr_ct6_value *v = rr_ct6.lookup(&k);

        return v && now - v->seen <= rr_ct_lifetime(k.proto, v->flags);
    }
}

/* Look up p's flow in direction dir (the tuple as parsed). 1 and *ci filled if known.
 * A UDP reply entry that outlived its lifetime while its forward entry did not (a flow
 * whose client keeps sending and whose server answers rarely: the kernel's conntrack,
 * one entry for both directions, keeps such a flow) lives on, refreshed. */
static __always_inline int rr_ct_get(struct rr_pkt *p, __u8 dir, struct rr_ct_info *ci)
{
    if (p->t.family == RR_AF_INET) {
        struct rr_ct4_key k;
        struct rr_ct4_value *v;

        rr_ct4_key_of(&k, &p->t, dir);
        v = rr_ct.lookup(&k);
        if (!v)
            return 0;
        ci->addr.w[0] = v->addr;
        ci->nat_addr.w[0] = v->nat_addr;
        RR_CT_INFO_PORTS(ci, v);
        if (__builtin_expect(!RR_CT_TOUCH(v, p), 0)) {
            if (dir != RR_DIR_REPLY || p->t.proto != IPPROTO_UDP || !rr_ct_twin_live(p, ci))
                return 0;
            v->seen = (__u32)bpf_jiffies64();
        }
        return 1;
    } else {
        struct rr_ct6_value *v;

        p->t.dir = dir;
        v = rr_ct6.lookup(&p->t);
        p->t.dir = RR_DIR_FORWARD;
        if (!v)
            return 0;
        ci->addr = v->addr;
        ci->nat_addr = v->nat_addr;
        RR_CT_INFO_PORTS(ci, v);
        if (__builtin_expect(!RR_CT_TOUCH(v, p), 0)) {
            if (dir != RR_DIR_REPLY || p->t.proto != IPPROTO_UDP || !rr_ct_twin_live(p, ci))
                return 0;
            v->seen = (__u32)bpf_jiffies64();
        }
        return 1;
    }
}

/* Insert an entry under k (family of k, dir set) with ci's translation; excl: only if k
 * holds none (-EEXIST otherwise). */
static __always_inline int rr_ct_put(const struct rr_ct_key *k, const struct rr_ct_info *ci,
                                     __u32 svc_id, __u32 be_id, __u32 now, int excl)
{
    int ret;

    if (k->family == RR_AF_INET) {
        struct rr_ct4_key k4;
        struct rr_ct4_value v = {};

        rr_ct4_key_of(&k4, k, k->dir);
        v.addr = ci->addr.w[0];
        v.nat_addr = ci->nat_addr.w[0];
        RR_CT_VALUE_REST(&v, ci, svc_id, be_id, now);
        ret = excl ? rr_ct.insert(&k4, &v) : rr_ct.update(&k4, &v);
        /* keeps clang from merging the two families' calls into one call site (one map
         * per site lets the verifier call the map directly instead of the generic helper) */
        asm volatile("" : "+r"(ret));
        return ret;
    } else {
        struct rr_ct6_value v = {};

        v.addr = ci->addr;
        v.nat_addr = ci->nat_addr;
        RR_CT_VALUE_REST(&v, ci, svc_id, be_id, now);
        ret = excl ? rr_ct6.insert((struct rr_ct_key *)k, &v)
                   : rr_ct6.update((struct rr_ct_key *)k, &v);
        asm volatile("" : "+r"(ret));
        return ret;
    }
}

/* Is the reply entry under rk a live flow of another service address than ri's (its
 * translated tuple is taken: the same client port reached another service sharing this
 * backend)? A stale (outlived) entry, or one of the same service, may be overwritten. */
static __always_inline int rr_ct_reply_taken(const struct rr_ct_key *rk,
                                             const struct rr_ct_info *ri, __u32 now)
{
    if (rk->family == RR_AF_INET) {
        struct rr_ct4_key k4;
        struct rr_ct4_value *v;

        rr_ct4_key_of(&k4, rk, RR_DIR_REPLY);
        v = rr_ct.lookup(&k4);
        return v && now - v->seen <= rr_ct_lifetime(rk->proto, v->flags) &&
               (v->nat_addr != ri->nat_addr.w[0] || v->nat_port != ri->nat_port);
    } else {
        struct rr_ct6_value *v = rr_ct6.lookup((struct rr_ct_key *)rk);

        return v && now - v->seen <= rr_ct_lifetime(rk->proto, v->flags) &&
               (!rr_addr_eq(&v->nat_addr, &ri->nat_addr) || v->nat_port != ri->nat_port);
    }
}

/* TCP flows end in conntrack as in the kernel's: a RST drops both entries of its flow
 * (after the RST itself is translated); a FIN marks both closing; and a SYN (or SYN-ACK)
 * meeting a closing entry belongs to a new connection that reuses the tuple, not to the
 * finished one. Without this, a client port used once through a service and then for a
 * direct connection to the backend would have that connection's SYN-ACK "restored" to
 * the service address by the old reply entry. */

/* Drop (drop != 0) or mark closing the entry under k. */
static __always_inline void rr_ct_end_one(struct rr_ct_key *k, int drop)
{
    if (k->family == RR_AF_INET) {
        struct rr_ct4_key k4;
        struct rr_ct4_value *v;

        rr_ct4_key_of(&k4, k, k->dir);
        if (drop) {
            rr_ct.delete(&k4);
        } else {
            v = rr_ct.lookup(&k4);
            if (v)
                v->flags |= RR_CT_CLOSING;
        }
    } else {
        struct rr_ct6_value *v;

        if (drop) {
            rr_ct6.delete(k);
        } else {
            v = rr_ct6.lookup(k);
            if (v)
                v->flags |= RR_CT_CLOSING;
        }
    }
}

/* p (seen in direction dir, its entry ci) ends its flow (drop) or starts to (mark). */
static __always_inline void rr_ct_end(const struct rr_pkt *p, __u8 dir,
                                      const struct rr_ct_info *ci, int drop)
{
    struct rr_ct_key k = p->t;

    k.dir = dir;
    rr_ct_end_one(&k, drop);
    rr_ct_twin(&k, p, dir, ci);
    rr_ct_end_one(&k, drop);
}

/* After p was translated with its entry: a FIN or RST ends the flow. */
static __always_inline void rr_ct_tcp_seen(const struct rr_pkt *p, __u8 dir,
                                           const struct rr_ct_info *ci)
{
    if (p->tcp_flags & RR_TCP_RST)
        rr_ct_end(p, dir, ci, 1);
    else if ((p->tcp_flags & RR_TCP_FIN) && !(ci->flags & RR_CT_CLOSING))
        rr_ct_end(p, dir, ci, 0);
}

/* Is entry ci, found for p, left over from a finished connection? */
static __always_inline int rr_ct_stale(const struct rr_pkt *p, const struct rr_ct_info *ci)
{
    return (p->tcp_flags & RR_TCP_SYN) && (ci->flags & RR_CT_CLOSING);
}

/* Is the backend of p's forward entry ci still programmed (its id in rr_backend, naming
 * the same address and port)? Asked for UDP only: as kube-proxy clears the UDP conntrack
 * entries of endpoints it no longer uses, a UDP flow whose backend went away (deleted,
 * or terminating while ready ones exist) is balanced anew instead of being sent to an
 * address that no longer answers for as long as it keeps sending. TCP flows keep their
 * backend: an established connection finishes where it started. */
static __always_inline int rr_ct_backend_gone(const struct rr_pkt *p,
                                              const struct rr_ct_info *ci)
{
    __u32 id = ci->backend_id;
    struct rr_backend *b;

    if (p->t.proto != IPPROTO_UDP)
        return 0;
    b = rr_backend.lookup(&id);
    return !b || b->port != ci->port || b->family != p->t.family ||
           !rr_addr_eq(&b->addr, &ci->addr);
}

/* Give reply p (its entry ci) its service address back (and its client, after SNAT or a
 * port remap); a FIN or RST then ends the flow. 0, or -1 if the packet could not be
 * rewritten. */
static __always_inline int rr_reply_rewrite(struct __sk_buff *skb, struct rr_pkt *p,
                                            const struct rr_ct_info *ci)
{
    if (rr_rewrite(skb, p, 1, &p->t.saddr, &ci->nat_addr, p->t.sport, ci->nat_port) < 0)
        return -1;
    if ((ci->flags & (RR_CT_SNAT | RR_CT_SPORT)) &&
        rr_rewrite(skb, p, 0, &p->t.daddr, &ci->addr, p->t.dport, ci->port) < 0)
        return -1;
    if (__builtin_expect(p->tcp_flags & (RR_TCP_FIN | RR_TCP_RST), 0))
        rr_ct_tcp_seen(p, RR_DIR_REPLY, ci);
    return 0;
}

/* Reply direction: backend -> client. Restore the service address (and the client, after
 * SNAT). snat_only: leave replies that were not source-translated for a later hook (the
 * uplink ingress must not turn a source into a local node address before routing).
 * One conntrack lookup; a packet that is no reply leaves here, and one from a source no
 * reply entry was ever made for leaves before it (rr_replies).
 */
static __always_inline int rr_reverse(struct __sk_buff *skb, struct rr_pkt *p, int snat_only)
{
    struct rr_ct_info ci = {};
    int snat;

    if (!rr_reply_maybe(p) || !rr_ct_get(p, RR_DIR_REPLY, &ci))
        return RR_NAT_PASS;
    snat = ci.flags & RR_CT_SNAT;
    if (snat_only && !snat)
        return RR_NAT_PASS;
    if (__builtin_expect(rr_ct_stale(p, &ci), 0)) { /* a new connection's SYN-ACK */
        rr_ct_end(p, RR_DIR_REPLY, &ci, 1);
        return RR_NAT_PASS;
    }
    if (rr_reply_rewrite(skb, p, &ci) < 0)
        return RR_NAT_DROP;
    return snat ? RR_NAT_SNAT : RR_NAT_DONE;
}

/* A packet to the service loopback address: the reply of a hairpin flow (rr_ct_create),
 * leaving the pod it goes back into. That address routes nowhere, so the reply gets its
 * service address and its client back here, before any routing: RR_NAT_HAIRPIN;
 * RR_NAT_PASS for what no hairpin flow made, RR_NAT_DROP if it could not be rewritten. */
static __always_inline int rr_hairpin_reply(struct __sk_buff *skb, struct rr_pkt *p)
{
    struct rr_ct_info ci = {};

    if (!rr_ct_get(p, RR_DIR_REPLY, &ci) || !(ci.flags & RR_CT_HAIRPIN))
        return RR_NAT_PASS;
    return rr_reply_rewrite(skb, p, &ci) < 0 ? RR_NAT_DROP : RR_NAT_HAIRPIN;
}

/* A new flow to svc: pick its backend (and SNAT source when allow_snat asks for one),
 * insert the reply entry and the forward entry. Fills *ci like a conntrack hit; 0 or -1.
 */
static __always_inline int rr_ct_create(struct rr_pkt *p, struct rr_svc_value *svc,
                                        int allow_snat, struct rr_ct_info *ci)
{
    struct rr_ct_key rk = {};
    struct rr_ct4_key k4;
    struct rr_ct_info ri = {};
    struct rr_backend be = {};
    struct rr_config *cfg;
    __u32 zero = 0, be_id = 0, svc_id = svc->svc_id, i, now;
    __be16 sport;

    if (rr_select(&p->t, svc, rr_hash_tuple(&p->t), &be, &be_id) < 0)
        return -1;
    if (be.family != p->t.family)
        return -1;
#ifdef RR_POL_SERVICES
    /* a pod's egress policy, decided on the backend (lib/policy.h) */
    if (!rr_pol_service_egress(&p->t, &be.addr, be.port))
        return -1;
#endif
    now = (__u32)bpf_jiffies64();
    ci->addr = be.addr;
    ci->port = be.port;
    ci->nat_addr = p->t.saddr;
    ci->nat_port = p->t.sport;

    rk.saddr = be.addr;
    rk.sport = be.port;
    rk.proto = p->t.proto;
    rk.family = p->t.family;
    rk.dir = RR_DIR_REPLY;
    if (allow_snat && !(be.flags & RR_BE_LOCAL) && !(svc->flags & RR_SVC_LOCAL_ONLY)) {
        cfg = rr_config.lookup(&zero);
        if (!cfg)
            return -1;
        if (p->t.family == RR_AF_INET) {
            if (!cfg->node_addr.w[0])
                return -1;
            ci->nat_addr.w[0] = cfg->node_addr.w[0];
            rk.daddr.w[0] = ci->nat_addr.w[0];
            rr_ct4_key_of(&k4, &rk, RR_DIR_REPLY);
#pragma unroll
            for (i = 0; i < RR_SNAT_TRIES; i++) {
                sport = htons(32768 + bpf_get_prandom_u32() % 28000);
                k4.dport = sport;
                if (!rr_ct.lookup(&k4))
                    break;
            }
        } else {
            /* the node's IPv6 address; the port search asks the IPv6 conntrack */
            rk.daddr.w[0] = cfg->node_addr6.w[0];
            rk.daddr.w[1] = cfg->node_addr6.w[1];
            rk.daddr.w[2] = cfg->node_addr6.w[2];
            rk.daddr.w[3] = cfg->node_addr6.w[3];
            if (!(rk.daddr.w[0] | rk.daddr.w[1] | rk.daddr.w[2] | rk.daddr.w[3]))
                return -1; /* no IPv6 node address configured: refuse */
            ci->nat_addr = rk.daddr;
#pragma unroll
            for (i = 0; i < RR_SNAT_TRIES; i++) {
                sport = htons(32768 + bpf_get_prandom_u32() % 28000);
                rk.dport = sport;
                if (!rr_ct6.lookup(&rk))
                    break;
            }
        }
        if (i == RR_SNAT_TRIES)
            return -1;
        ci->nat_port = sport;
        rk.dport = sport;
        ci->flags = RR_CT_SNAT;
    } else {
        rk.daddr = p->t.saddr;
        rk.dport = p->t.sport;
        if (__builtin_expect(!allow_snat && rr_addr_eq(&be.addr, &p->t.saddr), 0)) {
            /* hairpin: the pod itself is the backend; it sees the connection come from
             * the service loopback address, its reply goes there and is restored where it
             * leaves the pod (rr_hairpin_reply) */
            rr_loopback(&rk.daddr, p->t.family);
            ci->nat_addr = rk.daddr;
            ci->flags = RR_CT_SPORT | RR_CT_HAIRPIN;
        }
    }

    /* reply entry first (a reply can only follow the forward packet) */
    ri.addr = p->t.saddr;
    ri.port = p->t.sport;
    ri.nat_addr = p->t.daddr;
    ri.nat_port = p->t.dport;
    ri.flags = ci->flags;
    rr_reply_mark(&rk);
    if (ci->flags & RR_CT_SNAT) {
        if (rr_ct_put(&rk, &ri, svc_id, be_id, now, 0) < 0)
            return -1;
    } else if (rr_ct_put(&rk, &ri, svc_id, be_id, now, 1) < 0) {
        /* the translated tuple (client -> backend) is in use: by this flow's past (a
         * retransmission, a reused tuple) or by another service's flow from the same
         * client port to this backend, which keeps its entry: then this flow gets another
         * source port, as the kernel's NAT does on a clash */
        if (!rr_ct_reply_taken(&rk, &ri, now)) {
            if (rr_ct_put(&rk, &ri, svc_id, be_id, now, 0) < 0)
                return -1;
        } else {
            ri.flags |= RR_CT_SPORT;
#pragma unroll
            for (i = 0; i < RR_SNAT_TRIES; i++) {
                sport = htons(32768 + bpf_get_prandom_u32() % 28000);
                rk.dport = sport;
                if (rr_ct_put(&rk, &ri, svc_id, be_id, now, 1) == 0)
                    break;
            }
            if (i == RR_SNAT_TRIES)
                return -1;
            ci->nat_port = sport;
            ci->flags |= RR_CT_SPORT;
        }
    }
    p->t.dir = RR_DIR_FORWARD;
    if (rr_ct_put(&p->t, ci, svc_id, be_id, now, 0) < 0)
        return -1;
    return 0;
}

/* Forward direction: client -> service. allow_snat is set on the uplink only; new_flows
 * is 0 where only flows already in the conntrack are translated (the pod program without
 * per-packet LB: the socket hooks balance new flows; those balanced here before keep
 * their translation).
 * Conntrack is asked first: a known flow costs one lookup and keeps its backend whatever
 * happened to its service since (kube-proxy's semantics: an established connection
 * outlives the rules that made it, as it does in the kernel's conntrack; a UDP flow whose
 * backend went away is balanced anew, rr_ct_backend_gone). A packet of no
 * known flow then asks the service map (a packet to no service: two lookups). A new
 * flow inserts its forward entry and the reply entry that the reverse path looks up.
 * A packet whose destination's /24 (IPv4) or /64 (IPv6) holds no service leaves first
 * (rr_vips).
 */
static __always_inline int rr_forward(struct __sk_buff *skb, struct rr_pkt *p, int allow_snat,
                                      int new_flows)
{
    struct rr_ct_info ci = {};
    struct rr_svc_value *svc;

    /* forward entries are keyed by their service address: no service there, no entry */
    if (!rr_vip_maybe(&p->t.daddr, p->t.family))
        return RR_NAT_PASS;
    if (!rr_ct_get(p, RR_DIR_FORWARD, &ci) || __builtin_expect(rr_ct_stale(p, &ci), 0) ||
        __builtin_expect(rr_ct_backend_gone(p, &ci), 0)) {
        if (!new_flows)
            return RR_NAT_PASS;
        svc = rr_svc_lookup(&p->t);
        if (!svc)
            return RR_NAT_PASS;
        if (__builtin_expect(!rr_src_allowed(svc, &p->t.saddr, p->t.family), 0))
            return RR_NAT_DROP; /* a client outside the LoadBalancer's source ranges */
        ci.flags = 0; /* a stale entry's are not the new flow's */
        if (rr_ct_create(p, svc, allow_snat, &ci) < 0)
            return RR_NAT_DROP;
    }
    if (rr_rewrite(skb, p, 0, &p->t.daddr, &ci.addr, p->t.dport, ci.port) < 0)
        return RR_NAT_DROP;
    if ((ci.flags & (RR_CT_SNAT | RR_CT_SPORT)) &&
        rr_rewrite(skb, p, 1, &p->t.saddr, &ci.nat_addr, p->t.sport, ci.nat_port) < 0)
        return RR_NAT_DROP;
    if (__builtin_expect(p->tcp_flags & (RR_TCP_FIN | RR_TCP_RST), 0))
        rr_ct_tcp_seen(p, RR_DIR_FORWARD, &ci);
    if (__builtin_expect(ci.flags & RR_CT_HAIRPIN, 0))
        return RR_NAT_HAIRPIN;
    return (ci.flags & RR_CT_SNAT) ? RR_NAT_SNAT : RR_NAT_DONE;
}

#endif
