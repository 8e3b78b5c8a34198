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
 * One conntrack lookup; a packet that is no reply leaves here.
 */
static __always_inline int rr_reverse(struct __sk_buff *skb, struct rr_pkt *p, int snat_only)
{
    struct rr_ct_value *ct;
    struct rr_addr vip, cip;
    __be16 vport, cport;
    int snat;

    p->t.dir = RR_DIR_REPLY;
    ct = rr_ct.lookup(&p->t);
    p->t.dir = RR_DIR_FORWARD;
    if (!ct)
        return RR_NAT_PASS;
    snat = ct->flags & RR_CT_SNAT;
    if (snat_only && !snat)
        return RR_NAT_PASS;
    ct->seen_ns = bpf_ktime_get_ns();
    vip = ct->nat_addr;
    vport = ct->nat_port;
    cip = ct->addr;
    cport = ct->port;
    if (rr_rewrite(skb, p, 1, &p->t.saddr, &vip, p->t.sport, vport) < 0)
        return RR_NAT_DROP;
    if (snat) {
        if (rr_rewrite(skb, p, 0, &p->t.daddr, &cip, p->t.dport, cport) < 0)
            return RR_NAT_DROP;
        return RR_NAT_SNAT;
    }
    return RR_NAT_DONE;
}

/* Forward direction: client -> service. allow_snat is set on the uplink only.
 * The service map is asked first, so a packet to no service costs one lookup; a packet
 * to a service costs one conntrack lookup when its flow is known. A new flow inserts
 * its forward entry and the reply entry that the reverse path looks up.
 */
static __always_inline int rr_forward(struct __sk_buff *skb, struct rr_pkt *p, int allow_snat)
{
    struct rr_ct_key rk = {};
    struct rr_ct_value nv = {};
    struct rr_ct_value *ct;
    struct rr_svc_value *svc;
    struct rr_backend be = {};
    struct rr_config *cfg;
    struct rr_addr baddr, saddr;
    __u32 zero = 0, be_id = 0, svc_id, i;
    __u64 now;
    __be16 bport, sport;
    int snat = 0;

    svc = rr_svc_lookup(&p->t);
    if (!svc)
        return RR_NAT_PASS;
    p->t.dir = RR_DIR_FORWARD;
    ct = rr_ct.lookup(&p->t);
    now = bpf_ktime_get_ns();
    if (ct) {
        ct->seen_ns = now;
        baddr = ct->addr;
        bport = ct->port;
        snat = ct->flags & RR_CT_SNAT;
        saddr = ct->nat_addr;
        sport = ct->nat_port;
        goto rewrite;
    }
    svc_id = svc->svc_id;
    if (rr_select(&p->t, svc, rr_hash_tuple(&p->t), now, &be, &be_id) < 0)
        return RR_NAT_DROP;
    if (be.family != p->t.family)
        return RR_NAT_DROP;
    baddr = be.addr;
    bport = be.port;
    saddr = p->t.saddr;
    sport = p->t.sport;

    rk.saddr = baddr;
    rk.sport = bport;
    rk.proto = p->t.proto;
    rk.family = p->t.family;
    rk.dir = RR_DIR_REPLY;
    if (allow_snat && !(be.flags & RR_BE_LOCAL) && !(svc->flags & RR_SVC_LOCAL_ONLY)) {
        if (p->t.family != RR_AF_INET) /* SNAT is IPv4 only */
            return RR_NAT_DROP;
        cfg = rr_config.lookup(&zero);
        if (!cfg || !cfg->node_addr.w[0])
            return RR_NAT_DROP;
        saddr.w[0] = cfg->node_addr.w[0];
        rk.daddr.w[0] = saddr.w[0];
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

    /* reply entry first (a reply can only follow the forward packet) */
    nv.addr = p->t.saddr;
    nv.port = p->t.sport;
    nv.nat_addr = p->t.daddr;
    nv.nat_port = p->t.dport;
    nv.svc_id = svc_id;
    nv.backend_id = be_id;
    nv.flags = snat ? RR_CT_SNAT : 0;
    nv.created_ns = now;
    nv.seen_ns = now;
    if (rr_ct.update(&rk, &nv) < 0)
        return RR_NAT_DROP;
    nv.addr = baddr;
    nv.port = bport;
    nv.nat_addr = saddr;
    nv.nat_port = sport;
    if (rr_ct.update(&p->t, &nv) < 0)
        return RR_NAT_DROP;

rewrite:
    if (rr_rewrite(skb, p, 0, &p->t.daddr, &baddr, p->t.dport, bport) < 0)
        return RR_NAT_DROP;
    if (snat) {
        if (rr_rewrite(skb, p, 1, &p->t.saddr, &saddr, p->t.sport, sport) < 0)
            return RR_NAT_DROP;
        return RR_NAT_SNAT;
    }
    return RR_NAT_DONE;
}

#endif
