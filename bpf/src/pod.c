/* Host side of each pod veth.
 * ingress (packets leaving the pod): DNAT to a service backend, tracked in rr_ct (a pod
 *   that is its own backend gets the service loopback address as its source, and the
 *   reply to that address is restored here, lib/nat.h); with host routing, also the
 *   reverse NAT of replies leaving a backend pod, and the forwarding of what leaves pods
 *   (lib/route.h, lib/hostroute.h). Without per-packet LB (RR_PER_PACKET_LB 0: the
 *   socket hooks balance new flows), no new flow is translated: the forwarding, the
 *   reverse NAT of replies leaving a backend pod, and the translation of flows already
 *   in the conntrack (made before per-packet LB was switched off); the agent then
 *   attaches it only with host routing.
 * egress (packets entering the pod; loaded with per-packet LB only): reverse NAT of
 * replies from backends (replies are translated where they leave the node's routing, so a
 * source is never made local early; with host routing, those not already translated at
 * their source), and of ICMP errors about translated flows (lib/icmp.h).
 * Under network policy (RR_NETWORK_POLICY), a pod's new flow to a service is decided on
 * the backend picked for it, against the pod's egress policy (lib/policy.h): the policy
 * program on the pod's own interface saw only the service address, and left the decision
 * here.
 */
#if RR_NETWORK_POLICY
#define RR_POLICY_MAPS
#define RR_POL_SERVICES
#endif
#include "maps.h"
#include "lib/pkt.h"
#if RR_NETWORK_POLICY
#include "lib/policy.h"
#endif
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/hostroute.h"
#include "lib/icmp.h"

int rr_pod_ingress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0) /* not TCP or UDP: an error about a hairpin flow? */
        return rr_icmp_hairpin(skb) ? rr_route_back(skb, TC_ACT_OK) : TC_ACT_OK;
    if (__builtin_expect(rr_is_loopback(&p.t.daddr, p.t.family), 0)) {
        switch (rr_hairpin_reply(skb, &p)) { /* back into the pod it leaves */
        case RR_NAT_DROP:
            return TC_ACT_SHOT;
        case RR_NAT_HAIRPIN:
            return rr_route_back(skb, TC_ACT_OK);
        }
    }
    /* without per-packet LB, flows it translated before keep their translation */
    switch (rr_forward(skb, &p, 0, RR_PER_PACKET_LB)) {
    case RR_NAT_DROP:
        return TC_ACT_SHOT;
    case RR_NAT_DONE:
        return RR_HOST_ROUTING ? rr_route_fast(skb, TC_ACT_OK) : TC_ACT_OK;
    case RR_NAT_HAIRPIN: /* the pod is its own backend: straight back in */
        return rr_route_back(skb, TC_ACT_OK);
    default: /* pod to pod, pod to the network, a reply leaving a backend */
        return RR_HOST_ROUTING ? rr_route_untranslated(skb, &p, TC_ACT_OK, 0) : TC_ACT_OK;
    }
}

int rr_pod_egress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0) {
        rr_icmp_reverse(skb, 0); /* an error about a translated flow */
        return TC_ACT_OK;
    }
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
