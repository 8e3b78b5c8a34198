/* Network policy decisions shared by the policy programs (policy.c, at each pod's own
 * interface) and the pod program (pod.c, host side of the veth), which decides a pod's
 * egress to a service on the backend it picked: there, after the translation, is what
 * Kubernetes policy is about (the service address is no peer). Needs RR_POLICY_MAPS. */
#ifndef RR_LIB_POLICY_H
#define RR_LIB_POLICY_H

static __always_inline void rr_pol_count(int idx)
{
    __u64 *c = rr_pol_stats.lookup(&idx);

    if (c)
        *c += 1;
}

/* A packet refused for endpoint ep: counted in all and for the endpoint. */
static __always_inline void rr_pol_refused(__u32 ep)
{
    __u64 *c = rr_pol_drops.lookup(&ep);

    rr_pol_count(RR_POL_DROPPED);
    if (c)
        *c += 1;
}

/* Is a (of family) one of the node's own addresses? */
static __always_inline int rr_pol_is_node(const struct rr_addr *a, __u8 family)
{
    struct rr_pol_ep_key k = {};

    k.addr = *a;
    k.family = family;
    return rr_pol_node.lookup(&k) != 0;
}

/* Does the longest entry for (ep, dir, peer) allow t's protocol to port (host order)? */
static __always_inline int rr_pol_allows(__u32 ep, __u8 dir, const struct rr_ct_key *t,
                                         const struct rr_addr *peer, __u16 port)
{
    struct rr_pol_key k = {};
    struct rr_pol_value *v;
    int i;

    k.prefixlen = 64 + (t->family == RR_AF_INET ? 32 : 128);
    k.ep = ep;
    k.dir = dir;
    k.family = t->family;
    k.peer = *peer;
    v = rr_pol.lookup(&k);
    if (!v)
        return 0;
#pragma unroll
    for (i = 0; i < RR_POL_RANGES; i++) {
        if (i >= v->count)
            break;
        if (v->r[i].proto == RR_POL_ANY ||
            (v->r[i].proto == t->proto && v->r[i].lo <= port && port <= v->r[i].hi))
            return 1;
    }
    return 0;
}

/* May the pod at t's source open a new flow t (to a service) that goes to the backend at
 * be_addr:be_port (network order)? Yes when it is under no egress policy, when the
 * backend is itself or its own node, or when its egress entries allow the backend on the
 * backend's port. A refusal is counted. */
static __always_inline int rr_pol_service_egress(const struct rr_ct_key *t,
                                                 const struct rr_addr *be_addr,
                                                 __be16 be_port)
{
    struct rr_pol_ep_key ek = {};
    struct rr_pol_ep *ep;

    ek.addr = t->saddr;
    ek.family = t->family;
    ep = rr_pol_eps.lookup(&ek);
    if (!ep || !(ep->flags & RR_POL_EGRESS))
        return 1;
    if ((be_addr->w[0] == t->saddr.w[0] && be_addr->w[1] == t->saddr.w[1] &&
         be_addr->w[2] == t->saddr.w[2] && be_addr->w[3] == t->saddr.w[3]) ||
        rr_pol_is_node(be_addr, t->family))
        return 1;
    if (rr_pol_allows(ep->id, RR_POL_EGRESS, t, be_addr, ntohs(be_port)))
        return 1;
    rr_pol_refused(ep->id);
    return 0;
}

#endif
