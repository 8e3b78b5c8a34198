/* Host side of each pod veth.
 * ingress (packets leaving the pod): DNAT to a service backend, tracked in rr_ct; with
 *   host routing, also the reverse NAT of replies leaving a backend pod, and the
 *   forwarding of what leaves pods (lib/route.h).
 * egress (packets entering the pod): reverse NAT of replies from backends (replies are
 * translated where they leave the node's routing, so a source is never made local early;
 * with host routing, those not already translated at their source).
 */
#include "maps.h"
#include "lib/pkt.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/route.h"

#if RR_HOST_ROUTING
/* A packet leaving a pod that no service translated: a reply of a flow translated on this
 * node (the pod is its backend) gets its service address back here, at its source, and
 * either is forwarded by the program (pod to pod, pod to the network: the kernel's
 * forwarding path skipped). A packet the program cannot forward leaves as it came, and
 * a reply then meets its reverse NAT where it would without host routing (the client's
 * veth, rr_pod_egress, or the uplink); the uncommon replies (a SNAT'd flow, a closing
 * entry meeting a SYN) go that way too. A reply translated here and handed into a pod
 * of this node skips that pod's egress program, which would find nothing more to do. */
static __always_inline int rr_pod_out(struct __sk_buff *skb, struct rr_pkt *p)
{
    struct bpf_fib_lookup fib;
    struct rr_ct_info ci = {};
    int reply = rr_reply_maybe(p) && rr_ct_get(p, RR_DIR_REPLY, &ci);

    if (reply && ((ci.flags & RR_CT_SNAT) || rr_ct_stale(p, &ci)))
        return TC_ACT_OK;
    if (rr_route_lookup(skb, &fib) < 0)
        return TC_ACT_OK;
    if (reply) {
        if (rr_rewrite(skb, p, 1, &p->t.saddr, &ci.nat_addr, p->t.sport, ci.nat_port) < 0)
            return TC_ACT_SHOT;
        if ((ci.flags & RR_CT_SPORT) &&
            rr_rewrite(skb, p, 0, &p->t.daddr, &ci.addr, p->t.dport, ci.port) < 0)
            return TC_ACT_SHOT;
        if (__builtin_expect(p->tcp_flags & (RR_TCP_FIN | RR_TCP_RST), 0))
            rr_ct_tcp_seen(p, RR_DIR_REPLY, &ci);
    }
    return rr_route_send(skb, &fib);
}
#endif

int rr_pod_ingress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_OK;
    switch (rr_forward(skb, &p, 0)) {
    case RR_NAT_DROP:
        return TC_ACT_SHOT;
    case RR_NAT_DONE:
        return RR_HOST_ROUTING ? rr_route_fast(skb, TC_ACT_OK) : TC_ACT_OK;
    default:
#if RR_HOST_ROUTING
        return rr_pod_out(skb, &p);
#else
        return TC_ACT_OK;
#endif
    }
}

int rr_pod_egress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_OK;
    return rr_reverse(skb, &p, 0) == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Attached nowhere: the agent runs it (BPF_PROG_TEST_RUN) to set bits of one rr_replies
 * word, atomically like the programs that set them while it arms the filter
 * (bpf/replies.py). Input: an Ethernet header's room, then the word's index (__u32, 4
 * bytes of padding) and the bits (__u64), native byte order. 0 if done, 1 if refused. */
int rr_replies_mark(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u32 word;
    __u64 bits, *w;

    if (data + 14 + 16 > end)
        return 1;
    __builtin_memcpy(&word, data + 14, sizeof(word));
    __builtin_memcpy(&bits, data + 14 + 8, sizeof(bits));
    if (word >= RR_REPLY_WORDS)
        return 1;
    w = rr_replies.lookup(&word);
    if (!w)
        return 1;
    __sync_fetch_and_or(w, bits);
    return 0;
}
