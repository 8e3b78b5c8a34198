/* Forwarding in BPF of packets no service translated on their way (lib/route.h routes
 * them): the reverse NAT a reply of a translated flow needs is done here, where it enters
 * the node's forwarding, whenever the program can route it on; what it cannot route
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
    int into_pod;

    if (reply && ((ci.flags & RR_CT_SNAT) || rr_ct_stale(p, &ci)))
        return stack;
    if (rr_route_lookup(skb, &fib) < 0)
        return stack;
    into_pod = rr_into_pod(&fib);
    if (pods_only && !into_pod)
        return stack;
    if (reply && rr_reply_rewrite(skb, p, &ci) < 0)
        return TC_ACT_SHOT;
    return rr_route_send(skb, &fib, into_pod);
}

#endif
