/* Forwarding in BPF of packets no service translated on their way (lib/route.h routes
 * them): the reverse NAT a reply of a translated flow needs is done here, where it enters
 * the node's forwarding, whenever the program can route it on (a next hop still to be
 * resolved included: the neighbour subsystem resolves it); what it cannot route
 * leaves as it came, and a reply then meets its reverse NAT where it would without host
 * routing (the client's veth, rr_pod_egress, or the uplink). The uncommon replies (a
 * SNAT'd flow, a closing entry meeting a SYN) go that way too. A reply translated here
 * and handed into a pod of this node skips that pod's egress program, which would find
 * nothing more to do.
 */
#ifndef RR_LIB_HOSTROUTE_H
#define RR_LIB_HOSTROUTE_H

#include "lib/nat.h"
#include "lib/route.h"

/* Forward p (at TC ingress, not translated by rr_forward), restoring a reply's service
 * address first; stack is the verdict that leaves it to the kernel. pods_only: forward
 * only into pods of this node (the uplink: what the network sends elsewhere is routed by
 * the kernel, the node acting as a router). */
static __always_inline int rr_route_untranslated(struct __sk_buff *skb, struct rr_pkt *p,
                                                 int stack, int pods_only)
{
    struct bpf_fib_lookup fib;
    struct rr_ct_info ci = {};
    int reply = rr_reply_maybe(p) && rr_ct_get(p, RR_DIR_REPLY, &ci);
    int r, how;

    if (reply && ((ci.flags & RR_CT_SNAT) || rr_ct_stale(p, &ci)))
        return stack;
    r = rr_route_lookup(skb, &fib);
    if (r < 0)
        return stack;
    how = rr_route_how(&fib, r);
    /* (a next hop to resolve gives no MAC to check: the interface alone says pod) */
    if (pods_only && how != RR_SEND_INTO_POD &&
        !(how == RR_SEND_NEIGH && rr_pod_ifs.lookup(&fib.ifindex)))
        return stack;
    if (reply && rr_reply_rewrite(skb, p, &ci) < 0)
        return TC_ACT_SHOT;
    return rr_route_send(skb, &fib, how);
}

#endif
