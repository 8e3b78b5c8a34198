/* Conntrack-backed DNAT/SNAT and reverse NAT shared by the TC programs. */
#ifndef RR_LIB_NAT_H
#define RR_LIB_NAT_H

#define RR_NAT_PASS 0    /* not ours: let the packet go */
#define RR_NAT_DONE 1    /* rewritten, let the kernel route it */
#define RR_NAT_SNAT 2    /* rewritten with SNAT: send it out of the uplink ourselves */
#define RR_NAT_DROP (-1) /* refuse */

#define RR_SNAT_TRIES 8

/* Reply direction: backend -> client. Restore the service address (and the client, after
 * SNAT). snat_only: leave replies that were not source-translated for a later hook (the
 * uplink ingress must not turn a source into a local node address before routing).
 */
static __always_inline int rr_reverse(struct __sk_buff *skb, struct rr_pkt *p, int snat_only)
{
    struct rr_ct_key k = p->t;
    struct rr_ct_value *ct;
    __be32 vip, cip;
    __be16 vport, cport;
    int snat;

    k.dir = RR_DIR_REPLY;
    ct = rr_ct.lookup(&k);
    if (!ct)
        return RR_NAT_PASS;
    if (snat_only && !(ct->flags & RR_CT_SNAT))
        return RR_NAT_PASS;
    ct->seen_ns = bpf_ktime_get_ns();
    vip = ct->nat_addr.w[0];
    vport = ct->nat_port;
    cip = ct->addr.w[0];
    cport = ct->port;
    snat = ct->flags & RR_CT_SNAT;
    if (rr_rewrite(skb, p, 1, p->t.saddr.w[0], vip, p->t.sport, vport) < 0)
        return RR_NAT_DROP;
    if (snat) {
        if (rr_rewrite(skb, p, 0, p->t.daddr.w[0], cip, p->t.dport, cport) < 0)
            return RR_NAT_DROP;
        return RR_NAT_SNAT;
    }
    return RR_NAT_DONE;
}

/* Forward direction: client -> service. allow_snat is set on the uplink only. */
static __always_inline int rr_forward(struct __sk_buff *skb, struct rr_pkt *p, int allow_snat)
{
    struct rr_ct_key k = p->t;
    struct rr_ct_key rk = {};
    struct rr_ct_value nv = {};
    struct rr_ct_value rv = {};
    struct rr_ct_value *ct;
    struct rr_svc_value *svc;
    struct rr_backend be = {};
    struct rr_config *cfg;
    __u32 zero = 0, be_id = 0, svc_id, i;
    __u64 now = bpf_ktime_get_ns();
    __be32 bip, sip;
    __be16 bport, sport;
    int snat = 0;

    k.dir = RR_DIR_FORWARD;
    ct = rr_ct.lookup(&k);
    if (ct) {
        ct->seen_ns = now;
        bip = ct->addr.w[0];
        bport = ct->port;
        snat = ct->flags & RR_CT_SNAT;
        sip = ct->nat_addr.w[0];
        sport = ct->nat_port;
        goto rewrite;
    }
    svc = rr_svc_lookup(&p->t);
    if (!svc)
        return RR_NAT_PASS;
    svc_id = svc->svc_id;
    if (rr_select(&p->t, svc, rr_hash_tuple(&p->t), &be, &be_id) < 0)
        return RR_NAT_DROP;
    bip = be.addr.w[0];
    bport = be.port;
    sip = p->t.saddr.w[0];
    sport = p->t.sport;

    rk.saddr.w[0] = bip;
    rk.sport = bport;
    rk.proto = p->t.proto;
    rk.family = RR_AF_INET;
    rk.dir = RR_DIR_REPLY;
    if (allow_snat && !(be.flags & RR_BE_LOCAL) && !(svc->flags & RR_SVC_LOCAL_ONLY)) {
        cfg = rr_config.lookup(&zero);
        if (!cfg || !cfg->node_addr.w[0])
            return RR_NAT_DROP;
        sip = cfg->node_addr.w[0];
        rk.daddr.w[0] = sip;
#pragma unroll
        for (i = 0; i < RR_SNAT_TRIES; i++) {
            sport = htons(32768 + bpf_get_prandom_u32() % 28000);
            rk.dport = sport;
            if (!rr_ct.lookup(&rk))
                break;
        }
        if (i == RR_SNAT_TRIES)
            return RR_NAT_DROP;
        snat = 1;
    } else {
        rk.daddr = p->t.saddr;
        rk.dport = p->t.sport;
    }

    nv.addr.w[0] = bip;
    nv.port = bport;
    nv.nat_addr.w[0] = sip;
    nv.nat_port = sport;
    nv.svc_id = svc_id;
    nv.backend_id = be_id;
    nv.flags = snat ? RR_CT_SNAT : 0;
    nv.created_ns = now;
    nv.seen_ns = now;

    rv.addr = p->t.saddr;
    rv.port = p->t.sport;
    rv.nat_addr = p->t.daddr;
    rv.nat_port = p->t.dport;
    rv.svc_id = svc_id;
    rv.backend_id = be_id;
    rv.flags = nv.flags;
    rv.created_ns = now;
    rv.seen_ns = now;

    if (rr_ct.update(&rk, &rv) < 0)
        return RR_NAT_DROP;
    if (rr_ct.update(&k, &nv) < 0)
        return RR_NAT_DROP;

rewrite:
    if (rr_rewrite(skb, p, 0, p->t.daddr.w[0], bip, p->t.dport, bport) < 0)
        return RR_NAT_DROP;
    if (snat) {
        if (rr_rewrite(skb, p, 1, p->t.saddr.w[0], sip, p->t.sport, sport) < 0)
            return RR_NAT_DROP;
        return RR_NAT_SNAT;
    }
    return RR_NAT_DONE;
}

#endif
